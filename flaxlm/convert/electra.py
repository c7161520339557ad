"""ELECTRA pre-training runs ↔ transformers: the discriminator as `ElectraForPreTraining`, the
generator as `ElectraForMaskedLM`, each a complete transformers model with its own config.

A bundle is `OUT/` (the discriminator, what users fine-tune) and `OUT/generator/`; both hold the
shared embeddings. The tables are the `electra` family's in `mappings.py`, written with an
`Encoder`'s names; `tower_view` renames a pre-training run's parameters into that view
(`embeddings/*` → `encoder/embeddings/*`, `discriminator/*` → `encoder/*`, the generator's head →
`mlm_head/*`) and `from_tower_view` renames back, so conversion stays exact (bit for bit).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxlm.run.checkpoint import read_params, write_weights_only
from flaxlm.run.workdir import ELECTRA_HEAD, Workdir
from flaxlm.convert.hf_config import check_heads_fill_hidden, label_fields
from flaxlm.convert.mappings import Table, from_hf, table_for, to_hf
from flaxlm.convert.model_io import param_count
from flaxlm.convert.parity import TOLERANCE, max_abs_diff, parity_record, torch_outputs
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.electra import ElectraPreTrainingModel
from flaxlm.models.param_tree import flat_names, unflatten_like

GENERATOR_SUBDIR = "generator"
PARITY_MAX_LEN = 64
# tower → (its head in the pre-training model, that head in the table's view, flaxlm task)
TOWERS = {"discriminator": ("discriminator_head", "discriminator_head", "electra"),
          "generator": ("generator_head", "mlm_head", "mlm")}


def tower_view(flat: Mapping[str, Any], tower: str) -> dict[str, Any]:
    """One tower of a pre-training run under the electra table's (`Encoder`) names."""
    head, view_head, _ = TOWERS[tower]
    view = {}
    for name, value in flat.items():
        if name.startswith("embeddings/"):
            view["encoder/" + name] = value
        elif name.startswith(tower + "/"):
            view["encoder/" + name[len(tower) + 1:]] = value
        elif name.startswith(head + "/"):
            view[view_head + name[len(head):]] = value
    return view


def from_tower_view(view: Mapping[str, Any], tower: str) -> dict[str, Any]:
    """The inverse of `tower_view`."""
    head, view_head, _ = TOWERS[tower]
    flat = {}
    for name, value in view.items():
        if name.startswith("encoder/embeddings/"):
            flat[name[len("encoder/"):]] = value
        elif name.startswith("encoder/"):
            flat[f"{tower}/{name[len('encoder/'):]}"] = value
        elif name.startswith(view_head + "/"):
            flat[head + name[len(view_head):]] = value
    return flat


def generator_config_from_shapes(discriminator: ModelConfig,
                                 shapes: Mapping[str, tuple[int, ...]]) -> ModelConfig:
    """The generator's config as a checkpoint's shapes give it (the run's fractions need not be
    known): q kernel `[D, H, K]`, intermediate kernel `[D, F]`, the number of layers."""
    q = shapes.get("generator/layers/0/attention/query/kernel")
    if q is None:
        raise FlaxlmError("ELECTRA checkpoint has no generator/layers/0/attention/query/kernel")
    layers = len({n.split("/")[2] for n in shapes if n.startswith("generator/layers/")})
    hidden, heads, per_head = q
    return dataclasses.replace(
        discriminator, hidden_size=hidden, num_layers=layers, num_heads=heads,
        head_dim=0 if heads * per_head == hidden else per_head,
        intermediate_size=shapes["generator/layers/0/intermediate/kernel"][1],
        embedding_size=discriminator.embedding_dim, pooler=False)


def abstract_pair(discriminator: ModelConfig, generator: ModelConfig):
    """(graphdef, pure dict of ShapeDtypeStruct) of the pre-training model, nothing allocated."""
    model = nnx.eval_shape(lambda: ElectraPreTrainingModel(discriminator, rngs=nnx.Rngs(0),
                                                           generator=generator))
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                  nnx.to_pure_dict(state))


def electra_hf_config(config: ModelConfig, task: str, labels: list[str] | None = None):
    """`ElectraConfig` of the (electra, task) class for one tower's (or encoder's) config."""
    import transformers

    table = table_for("electra", task)
    check_heads_fill_hidden(config, table.hf_class)
    if config.type_vocab_size == 0:
        raise FlaxlmError(f"model.type_vocab_size=0: {table.hf_class} always adds a token-type "
                          "embedding")
    task_fields = {}
    if task not in ("mlm", "electra"):
        task_fields = {"num_labels": config.num_labels,
                       "classifier_dropout": config.classifier_dropout,
                       **label_fields(labels, config.num_labels)}
    return transformers.ElectraConfig(
        architectures=[table.hf_class], vocab_size=config.vocab_size,
        embedding_size=config.embedding_dim, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size, hidden_act="gelu",
        hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id, tie_word_embeddings=True, dtype="float32",
        **task_fields)


def electra_model_config(hf, source: str) -> ModelConfig:
    """An `ElectraConfig` → the flaxlm config of that tower or encoder (arch "electra": BERT's
    post-LN body, exported back as Electra* classes); refuses what flaxlm does not compute."""
    for key, allowed in {"hidden_act": ("gelu",), "position_embedding_type": (None, "absolute"),
                         "is_decoder": (None, False), "add_cross_attention": (None, False),
                         "tie_word_embeddings": (None, True)}.items():
        if getattr(hf, key, None) not in allowed:
            raise FlaxlmError(f"{source}: {key}={getattr(hf, key, None)!r} is not supported by "
                              f"flaxlm's ELECTRA (supported: {', '.join(map(repr, allowed))})")
    hidden_dropout = float(hf.hidden_dropout_prob)
    config = ModelConfig(
        arch="electra", vocab_size=int(hf.vocab_size), hidden_size=int(hf.hidden_size),
        num_layers=int(hf.num_hidden_layers), num_heads=int(hf.num_attention_heads),
        intermediate_size=int(hf.intermediate_size),
        max_position_embeddings=int(hf.max_position_embeddings),
        type_vocab_size=int(hf.type_vocab_size), pad_token_id=int(hf.pad_token_id or 0),
        layer_norm_eps=float(hf.layer_norm_eps), hidden_dropout=hidden_dropout,
        attention_dropout=float(hf.attention_probs_dropout_prob),
        embedding_size=0 if hf.embedding_size == hf.hidden_size else int(hf.embedding_size),
        num_labels=int(hf.num_labels),
        classifier_dropout=(hidden_dropout if hf.classifier_dropout is None
                            else float(hf.classifier_dropout)))
    try:
        config.validate()
    except FlaxlmError as e:
        raise FlaxlmError(f"{source}: {e}") from None
    if config.hidden_size % config.num_heads:
        raise FlaxlmError(f"{source}: hidden_size={config.hidden_size} is not divisible by "
                          f"num_attention_heads={config.num_heads}")
    if config.type_vocab_size == 0:
        raise FlaxlmError(f"{source}: type_vocab_size=0, but ELECTRA always adds a token-type "
                          "embedding")
    return config


@functools.lru_cache(maxsize=4)
def _forward(graphdef):
    @jax.jit
    def forward(state, ids_BxL, mask_BxL, types_BxL):
        m = nnx.merge(graphdef, state)
        x_BxLxE = m.embeddings(ids_BxL, types_BxL, jnp.float32, None)
        disc_BxLxD = m.discriminator(x_BxLxE, mask_BxL, None)
        gen_BxLxG = m.generator(x_BxLxE, mask_BxL, None)
        return {"discriminator": {"hidden": disc_BxLxD,
                                  "logits": m.discriminator_head(disc_BxLxD)},
                "generator": {"hidden": gen_BxLxG,
                              "logits": m.generator_head(gen_BxLxG, m.embeddings.word)}}

    return forward


def pair_outputs(model: ElectraPreTrainingModel, batch) -> dict[str, dict[str, np.ndarray]]:
    """{tower: {"hidden", "logits"}}: the discriminator's logits `BxL`, the generator's `BxLxV`
    at every position; deterministic fp32."""
    graphdef, state = nnx.split(model)
    out = _forward(graphdef)(state, batch["input_ids"], batch["attention_mask"],
                             batch["token_type_ids"])
    return jax.tree.map(lambda v: np.asarray(v, np.float32), out)


def check_pair_parity(model, torch_models: Mapping[str, Any], batch, *, where: str,
                      tolerance: float = TOLERANCE) -> dict[str, float]:
    """Max |Δ| of hidden states and logits of each tower against its transformers model."""
    flax_out = pair_outputs(model, batch)
    diffs = {}
    for tower, torch_model in torch_models.items():
        torch_out = torch_outputs(torch_model, batch)
        for key in ("hidden", "logits"):
            diffs[f"{tower}_{key}_max_abs_diff"] = max_abs_diff(
                flax_out[tower][key], torch_out[key], f"{tower} {key}")
    return parity_record(diffs, batch, where=where, tolerance=tolerance)


def tables() -> dict[str, Table]:
    return {tower: table_for("electra", task) for tower, (_, _, task) in TOWERS.items()}


def read_pair(workdir: str, step: int | None):
    """(discriminator config, generator config, flat params, step) of an ELECTRA workdir."""
    discriminator = Workdir.open(workdir).saved_model
    params, _, step = read_params(workdir, None, step)
    flat = {k: np.asarray(v) for k, v in flat_names(params).items()}
    generator = generator_config_from_shapes(discriminator, {k: v.shape for k, v in flat.items()})
    _, abstract = abstract_pair(discriminator, generator)
    want = {k: tuple(v.shape) for k, v in flat_names(abstract).items()}
    got = {k: tuple(v.shape) for k, v in flat.items()}
    if want != got:
        bad = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
        raise FlaxlmError(f"{workdir}: step {step} does not hold an ELECTRA pair of config.json's "
                          f"shapes (first mismatch: {bad[0]})")
    return discriminator, generator, flat, step


def build_pair(discriminator: ModelConfig, generator: ModelConfig,
               flat: Mapping[str, np.ndarray]) -> ElectraPreTrainingModel:
    graphdef, abstract = abstract_pair(discriminator, generator)
    return nnx.merge(graphdef, unflatten_like(abstract, dict(flat)))


def write_pair_workdir(tmp: str, discriminator: ModelConfig, generator: ModelConfig,
                       flat: Mapping[str, np.ndarray], source: dict) -> int:
    """config.json + checkpoints/0 of an imported pair; returns the parameter count."""
    _, abstract = abstract_pair(discriminator, generator)
    params = unflatten_like(abstract, dict(flat))
    run = {"model": dataclasses.asdict(discriminator), "head": ELECTRA_HEAD,
           "objective": "electra", "generator": dataclasses.asdict(generator)}
    write_weights_only(tmp, params, run, source)
    return param_count(params)


def pair_to_hf(discriminator: ModelConfig, generator: ModelConfig,
               flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{tower: HF state dict} of a pre-training run's flat params."""
    configs = {"discriminator": discriminator, "generator": generator}
    return {tower: to_hf(table, tower_view(flat, tower), configs[tower])
            for tower, table in tables().items()}


def pair_from_hf(discriminator: ModelConfig, generator: ModelConfig,
                 tensors: Mapping[str, Mapping[str, np.ndarray]],
                 where: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The flat params of a pre-training run from both towers' HF state dicts; the towers'
    embeddings must be the same tensors (flaxlm shares one table)."""
    configs = {"discriminator": discriminator, "generator": generator}
    _, abstract = abstract_pair(discriminator, generator)
    shapes = {k: tuple(v.shape) for k, v in flat_names(abstract).items()}
    flat: dict[str, np.ndarray] = {}
    for tower, table in tables().items():
        try:
            view, _, _ = from_hf(table, tensors[tower], configs[tower], tower_view(shapes, tower),
                                 allow_missing_head=False)
        except FlaxlmError as e:
            raise FlaxlmError(f"{where[tower]}: {e}") from None
        for name, value in from_tower_view(view, tower).items():
            if name in flat and not np.array_equal(flat[name], value):
                hf_name = name.replace("embeddings/", "electra.embeddings.")
                raise FlaxlmError(f"{where['generator']}: embedding {hf_name} differs from the "
                                  f"discriminator's in {where['discriminator']}; flaxlm's ELECTRA "
                                  "shares one embedding table, so the pair cannot be imported "
                                  "exactly")
            flat[name] = value
    return flat

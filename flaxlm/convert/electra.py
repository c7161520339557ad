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

from flaxlm.convert.mappings.tables import Table, table_for
from flaxlm.convert.mappings.tensors import from_hf, to_hf
from flaxlm.convert.model_io import param_count
from flaxlm.convert.parity import TOLERANCE, max_abs_diff, parity_record, torch_outputs
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.electra import ElectraPreTrainingModel
from flaxlm.models.param_tree import flat_names, unflatten_like
from flaxlm.run.checkpoint import read_params, write_weights_only
from flaxlm.run.workdir import ELECTRA_HEAD, Workdir

GENERATOR_SUBDIR = "generator"
PARITY_MAX_LEN = 64
# tower → (its head in the pre-training model, that head in the table's view, flaxlm task)
TOWERS = {
    "discriminator": ("discriminator_head", "discriminator_head", "electra"),
    "generator": ("generator_head", "mlm_head", "mlm")
}


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
    model = nnx.eval_shape(
        lambda: ElectraPreTrainingModel(discriminator, rngs=nnx.Rngs(0), generator=generator))
    graphdef, state = nnx.split(model, nnx.Param)
    return graphdef, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                  nnx.to_pure_dict(state))


@functools.lru_cache(maxsize=4)
def _forward(graphdef):
    @jax.jit
    def forward(state, ids_BxL, mask_BxL, types_BxL):
        m = nnx.merge(graphdef, state)
        x_BxLxE = m.embeddings(ids_BxL, types_BxL, jnp.float32, None)
        disc_BxLxD = m.discriminator(x_BxLxE, mask_BxL, None)
        gen_BxLxG = m.generator(x_BxLxE, mask_BxL, None)
        return {
            "discriminator": {
                "hidden": disc_BxLxD,
                "logits": m.discriminator_head(disc_BxLxD)
            },
            "generator": {
                "hidden": gen_BxLxG,
                "logits": m.generator_head(gen_BxLxG, m.embeddings.word)
            }
        }

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
            diffs[f"{tower}_{key}_max_abs_diff"] = max_abs_diff(flax_out[tower][key],
                                                                torch_out[key], f"{tower} {key}")
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
    run = {
        "model": dataclasses.asdict(discriminator),
        "head": ELECTRA_HEAD,
        "objective": "electra",
        "generator": dataclasses.asdict(generator)
    }
    write_weights_only(tmp, params, run, source)
    return param_count(params)


def pair_to_hf(discriminator: ModelConfig, generator: ModelConfig,
               flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{tower: HF state dict} of a pre-training run's flat params."""
    configs = {"discriminator": discriminator, "generator": generator}
    return {
        tower: to_hf(table, tower_view(flat, tower), configs[tower])
        for tower, table in tables().items()
    }


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

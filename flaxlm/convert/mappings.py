"""One mapping table per Hugging Face architecture: flaxlm name ↔ HF name + a per-tensor hook.

A table row is `Rule(flax, hf, hook)`; `{i}` stands for the layer index. Hooks are exact
(transposes and reshapes only), so HF → flaxlm → HF gives back every fp32 tensor bit for bit.
Adding an architecture (ELECTRA, DistilBERT, a classifier head) means adding one table here and its
config translation in `hf_config.py`.

Layouts: flaxlm dense kernels are `[in, out]`, torch `nn.Linear` weights are `[out, in]`.
Attention keeps heads as a dimension in flaxlm: q/k/v kernels `[D, H, K]` and biases `[H, K]`, the
output kernel `[H, K, D]`; HF fuses heads into `H·K`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig

ToHf = Callable[[np.ndarray, ModelConfig], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Hook:
    name: str
    to_hf: ToHf
    from_hf: ToHf


def _heads(c: ModelConfig) -> tuple[int, int]:
    return c.num_heads, c.dim_per_head


IDENTITY = Hook("identity", lambda x, c: x, lambda x, c: x)
# [in, out] ↔ [out, in]
LINEAR = Hook("transpose", lambda x, c: x.T, lambda x, c: x.T)
# q/k/v kernel [D, H, K] ↔ [H·K, D]
HEADS_IN = Hook("[D,H,K]↔[H·K,D]",
                lambda x, c: x.reshape(x.shape[0], -1).T,
                lambda x, c: x.T.reshape(x.shape[1], *_heads(c)))
# q/k/v bias [H, K] ↔ [H·K]
HEADS_BIAS = Hook("[H,K]↔[H·K]", lambda x, c: x.reshape(-1), lambda x, c: x.reshape(*_heads(c)))
# attention output kernel [H, K, D] ↔ [D, H·K]
HEADS_OUT = Hook("[H,K,D]↔[D,H·K]",
                 lambda x, c: x.reshape(-1, x.shape[-1]).T,
                 lambda x, c: x.T.reshape(*_heads(c), x.shape[0]))


@dataclasses.dataclass(frozen=True)
class Rule:
    flax: str
    hf: str
    hook: Hook = IDENTITY


@dataclasses.dataclass(frozen=True)
class Table:
    """Everything conversion knows about one HF architecture family."""

    arch: str  # flaxlm ModelConfig.arch
    model_type: str  # HF config.json "model_type"
    mlm_class: str  # what export writes
    base_class: str  # an encoder-only checkpoint import also accepts
    config_class: str
    base_prefix: str  # where the encoder lives inside the MLM model ("roberta.", "bert.")
    rules: tuple[Rule, ...]
    head_prefix: str  # flaxlm names of the (optional on import) MLM head start with this
    # HF names that are the same tensor as another one (tied or aliased); checked, never stored.
    aliases: Mapping[str, str]
    # HF names (prefixes) that import drops: buffers, and weights flaxlm has no place for.
    ignored: tuple[str, ...]


def _encoder(p: str) -> tuple[Rule, ...]:
    """The BERT-family body; `p` is the base-model prefix."""
    e, l = f"{p}embeddings.", f"{p}encoder.layer.{{i}}."
    return (
        Rule("encoder/embeddings/word/embedding", e + "word_embeddings.weight"),
        Rule("encoder/embeddings/position/embedding", e + "position_embeddings.weight"),
        Rule("encoder/embeddings/token_type/embedding", e + "token_type_embeddings.weight"),
        Rule("encoder/embeddings/norm/scale", e + "LayerNorm.weight"),
        Rule("encoder/embeddings/norm/bias", e + "LayerNorm.bias"),
        Rule("encoder/layers/{i}/attention/query/kernel", l + "attention.self.query.weight", HEADS_IN),
        Rule("encoder/layers/{i}/attention/query/bias", l + "attention.self.query.bias", HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/key/kernel", l + "attention.self.key.weight", HEADS_IN),
        Rule("encoder/layers/{i}/attention/key/bias", l + "attention.self.key.bias", HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/value/kernel", l + "attention.self.value.weight", HEADS_IN),
        Rule("encoder/layers/{i}/attention/value/bias", l + "attention.self.value.bias", HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/out/kernel", l + "attention.output.dense.weight", HEADS_OUT),
        Rule("encoder/layers/{i}/attention/out/bias", l + "attention.output.dense.bias"),
        Rule("encoder/layers/{i}/attention_norm/scale", l + "attention.output.LayerNorm.weight"),
        Rule("encoder/layers/{i}/attention_norm/bias", l + "attention.output.LayerNorm.bias"),
        Rule("encoder/layers/{i}/intermediate/kernel", l + "intermediate.dense.weight", LINEAR),
        Rule("encoder/layers/{i}/intermediate/bias", l + "intermediate.dense.bias"),
        Rule("encoder/layers/{i}/output/kernel", l + "output.dense.weight", LINEAR),
        Rule("encoder/layers/{i}/output/bias", l + "output.dense.bias"),
        Rule("encoder/layers/{i}/output_norm/scale", l + "output.LayerNorm.weight"),
        Rule("encoder/layers/{i}/output_norm/bias", l + "output.LayerNorm.bias"),
    )


def _buffers(p: str) -> tuple[str, ...]:
    # Non-trainable index buffers older transformers saved, and the pooler an MLM model lacks.
    return (f"{p}embeddings.position_ids", f"{p}embeddings.token_type_ids", f"{p}pooler.")


XLMR = Table(
    arch="xlmr", model_type="xlm-roberta", mlm_class="XLMRobertaForMaskedLM",
    base_class="XLMRobertaModel", config_class="XLMRobertaConfig", base_prefix="roberta.",
    rules=_encoder("roberta.") + (
        Rule("mlm_head/transform/kernel", "lm_head.dense.weight", LINEAR),
        Rule("mlm_head/transform/bias", "lm_head.dense.bias"),
        Rule("mlm_head/norm/scale", "lm_head.layer_norm.weight"),
        Rule("mlm_head/norm/bias", "lm_head.layer_norm.bias"),
        Rule("mlm_head/bias", "lm_head.bias"),
    ),
    head_prefix="mlm_head/",
    aliases={"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
             "lm_head.decoder.bias": "lm_head.bias"},
    ignored=_buffers("roberta."),
)

BERT = Table(
    arch="bert", model_type="bert", mlm_class="BertForMaskedLM", base_class="BertModel",
    config_class="BertConfig", base_prefix="bert.",
    rules=_encoder("bert.") + (
        Rule("mlm_head/transform/kernel", "cls.predictions.transform.dense.weight", LINEAR),
        Rule("mlm_head/transform/bias", "cls.predictions.transform.dense.bias"),
        Rule("mlm_head/norm/scale", "cls.predictions.transform.LayerNorm.weight"),
        Rule("mlm_head/norm/bias", "cls.predictions.transform.LayerNorm.bias"),
        Rule("mlm_head/bias", "cls.predictions.bias"),
    ),
    head_prefix="mlm_head/",
    aliases={"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
             "cls.predictions.decoder.bias": "cls.predictions.bias"},
    ignored=_buffers("bert."),
)

TABLES: dict[str, Table] = {t.arch: t for t in (XLMR, BERT)}


def table_for_arch(arch: str) -> Table:
    if arch not in TABLES:
        raise FlaxlmError(f"no Hugging Face mapping for flaxlm arch {arch!r} "
                          f"(supported: {', '.join(sorted(TABLES))})")
    return TABLES[arch]


def expand(table: Table, config: ModelConfig) -> list[Rule]:
    """The table with `{i}` spelled out for every layer."""
    rows = []
    for rule in table.rules:
        if "{i}" in rule.flax:
            rows += [Rule(rule.flax.format(i=i), rule.hf.format(i=i), rule.hook)
                     for i in range(config.num_layers)]
        else:
            rows.append(rule)
    return rows


def to_hf(table: Table, flat_params: Mapping[str, np.ndarray],
          config: ModelConfig) -> dict[str, np.ndarray]:
    """flaxlm flat params (`/` names) → HF state dict (contiguous numpy arrays)."""
    rows = expand(table, config)
    unmapped = sorted(set(flat_params) - {r.flax for r in rows})
    if unmapped:
        raise FlaxlmError(f"flaxlm parameter {unmapped[0]!r} has no entry in the {table.arch} "
                          f"mapping table ({len(unmapped)} unmapped)")
    out = {}
    for rule in rows:
        if rule.flax not in flat_params:
            raise FlaxlmError(f"flaxlm parameter {rule.flax!r} (→ {rule.hf}) is missing")
        out[rule.hf] = np.ascontiguousarray(rule.hook.to_hf(np.asarray(flat_params[rule.flax]),
                                                           config))
    return out


def _with_prefix(table: Table, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Base-model checkpoints (`BertModel`, `XLMRobertaModel`) store the body without prefix."""
    p = table.base_prefix
    body = ("embeddings.", "encoder.", "pooler.")
    if any(k.startswith(p) for k in tensors) or not any(k.startswith(body) for k in tensors):
        return dict(tensors)
    return {(p + k if k.startswith(body) else k): v for k, v in tensors.items()}


def from_hf(table: Table, tensors: Mapping[str, np.ndarray], config: ModelConfig,
            expected: Mapping[str, tuple[int, ...]], *,
            allow_missing_head: bool) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """HF state dict → flaxlm flat params.

    Returns (params, flaxlm names absent from the checkpoint, HF names dropped as `ignored`).

    With `allow_missing_head`, the MLM head may be absent as a whole (an encoder-only checkpoint);
    any other missing, extra, mis-shaped or non-float tensor is a `FlaxlmError` naming it.
    """
    tensors = _with_prefix(table, tensors)
    dropped = sorted(k for k in tensors if k.startswith(table.ignored))
    tensors = {k: v for k, v in tensors.items() if not k.startswith(table.ignored)}
    for alias, target in table.aliases.items():
        if alias in tensors:
            if target in tensors and not np.array_equal(tensors[alias], tensors[target]):
                raise FlaxlmError(f"tensor {alias} differs from {target}; flaxlm ties them, so "
                                  "an untied checkpoint cannot be imported exactly")
            if target not in tensors:
                tensors[target] = tensors[alias]
            del tensors[alias]

    rows = expand(table, config)
    head = [r for r in rows if r.flax.startswith(table.head_prefix)]
    absent = [r.flax for r in head if r.hf not in tensors]
    if absent and (len(absent) != len(head) or not allow_missing_head):
        missing = next(r.hf for r in head if r.hf not in tensors)
        raise FlaxlmError(f"checkpoint is missing tensor {missing} (part of the MLM head)")

    params: dict[str, np.ndarray] = {}
    for rule in rows:
        if rule.flax in absent:
            continue
        if rule.hf not in tensors:
            raise FlaxlmError(f"checkpoint is missing tensor {rule.hf} (→ flaxlm {rule.flax})")
        value = tensors[rule.hf]
        if value.dtype.kind != "f":
            raise FlaxlmError(f"tensor {rule.hf} has dtype {value.dtype}; expected floats")
        want_hf = rule.hook.to_hf(np.empty(expected[rule.flax], np.float32), config).shape
        if tuple(value.shape) != tuple(want_hf):
            raise FlaxlmError(f"tensor {rule.hf} has shape {tuple(value.shape)}, but config.json "
                              f"implies {tuple(want_hf)} (flaxlm {rule.flax})")
        params[rule.flax] = rule.hook.from_hf(value.astype(np.float32, copy=False), config)
    extra = sorted(set(tensors) - {r.hf for r in rows})
    if extra:
        raise FlaxlmError(f"checkpoint has unexpected tensor {extra[0]} (not in the "
                          f"{table.arch} mapping table; {len(extra)} unexpected in all)")
    return params, absent, dropped

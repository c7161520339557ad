"""Conversion tables: a body table per model family × a head table per task, each row
flaxlm name ↔ HF name + a per-tensor hook.

A row is `Rule(flax, hf, hook, when)`; `{i}` stands for the layer index and `when` limits a row to
the configs that have the tensor (pooler, token types, embedding projection). Hooks are exact
(transposes and reshapes only), so HF → flaxlm → HF gives back every fp32 tensor bit for bit.
A transformers class is a (family, task) pair: adding a family (ELECTRA, DistilBERT) is one
`FAMILIES` row plus its `HEADS` rows and its config translation in `hf_config.py`; adding a task
is one `TASKS` row, its `HEADS` rows and a model in `flaxlm/models/heads.py`.

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
    # The row exists only for configs where this holds (None: always).
    when: Callable[[ModelConfig], bool] | None = None


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family's body, as its transformers base model stores it."""

    arch: str  # flaxlm ModelConfig.arch
    model_type: str  # HF config.json "model_type"
    config_class: str
    base_class: str  # the encoder-only class; its checkpoints store the body without prefix
    prefix: str  # where the body lives inside a task model ("roberta.", "bert.")
    body: tuple[Rule, ...]
    # HF names (prefixes) that import drops: index buffers, and weights flaxlm has no place for.
    ignored: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Task:
    """What a flaxlm head is for, independent of the family."""

    auto_class: str  # the transformers Auto class users load it with
    pipeline: str  # the transformers pipeline the model card shows
    head_prefix: str  # flaxlm names of the head's own parameters start with this


@dataclasses.dataclass(frozen=True)
class Head:
    """One task head as a family's transformers class stores it."""

    hf_class: str
    rules: tuple[Rule, ...]
    # HF names that are the same tensor as another one (tied or aliased); checked, never stored.
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Whether the class holds the body's pooler. If not, a pooler the model has is still written
    # (so `BertModel` / `*ForSequenceClassification` loaders find it) but this class ignores it.
    holds_pooler: bool = False


def _has_pooler(c: ModelConfig) -> bool:
    return c.pooler


def _has_token_types(c: ModelConfig) -> bool:
    return c.type_vocab_size > 0


def _body(p: str) -> tuple[Rule, ...]:
    """The BERT-family post-LN body; `p` is the base-model prefix."""
    e, l = f"{p}embeddings.", f"{p}encoder.layer.{{i}}."
    return (
        Rule("encoder/embeddings/word/embedding", e + "word_embeddings.weight"),
        Rule("encoder/embeddings/position/embedding", e + "position_embeddings.weight"),
        Rule("encoder/embeddings/token_type/embedding", e + "token_type_embeddings.weight",
             when=_has_token_types),
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
        Rule("encoder/pooler/dense/kernel", f"{p}pooler.dense.weight", LINEAR, when=_has_pooler),
        Rule("encoder/pooler/dense/bias", f"{p}pooler.dense.bias", when=_has_pooler),
    )


def _buffers(p: str) -> tuple[str, ...]:
    # Non-trainable index buffers older transformers saved (transformers rebuilds them).
    return (f"{p}embeddings.position_ids", f"{p}embeddings.token_type_ids")


# ---- Body tables: one row per model family. ----
FAMILIES: dict[str, Family] = {f.arch: f for f in (
    Family(arch="xlmr", model_type="xlm-roberta", config_class="XLMRobertaConfig",
           base_class="XLMRobertaModel", prefix="roberta.", body=_body("roberta."),
           ignored=_buffers("roberta.")),
    # BERT checkpoints saved from pre-training also carry the next-sentence head.
    Family(arch="bert", model_type="bert", config_class="BertConfig", base_class="BertModel",
           prefix="bert.", body=_body("bert."),
           ignored=_buffers("bert.") + ("cls.seq_relationship.",)),
)}

# ---- Tasks: what each flaxlm head is for. ----
TASKS: dict[str, Task] = {
    "mlm": Task("AutoModelForMaskedLM", "fill-mask", "mlm_head/"),
    "token_classification": Task("AutoModelForTokenClassification", "token-classification",
                                 "classifier/"),
    "sequence_classification": Task("AutoModelForSequenceClassification", "text-classification",
                                    "classifier/"),
}


def _mlm(transform: str, norm: str, bias: str) -> tuple[Rule, ...]:
    """The MLM head: dense, LayerNorm and the output bias (the decoder is tied)."""
    return (
        Rule("mlm_head/transform/kernel", transform + ".weight", LINEAR),
        Rule("mlm_head/transform/bias", transform + ".bias"),
        Rule("mlm_head/norm/scale", norm + ".weight"),
        Rule("mlm_head/norm/bias", norm + ".bias"),
        Rule("mlm_head/bias", bias),
    )


_TOKEN_HEAD = (Rule("classifier/kernel", "classifier.weight", LINEAR),
               Rule("classifier/bias", "classifier.bias"))

# ---- Head tables: one row per (family, task). ----
HEADS: dict[tuple[str, str], Head] = {
    ("xlmr", "mlm"): Head(
        "XLMRobertaForMaskedLM", _mlm("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
        aliases={"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
                 "lm_head.decoder.bias": "lm_head.bias"}),
    ("bert", "mlm"): Head(
        "BertForMaskedLM", _mlm("cls.predictions.transform.dense",
                                 "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
        aliases={"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                 "cls.predictions.decoder.bias": "cls.predictions.bias"}),
    ("xlmr", "token_classification"): Head("XLMRobertaForTokenClassification", _TOKEN_HEAD),
    ("bert", "token_classification"): Head("BertForTokenClassification", _TOKEN_HEAD),
    ("xlmr", "sequence_classification"): Head(
        "XLMRobertaForSequenceClassification",
        (Rule("classifier/dense/kernel", "classifier.dense.weight", LINEAR),
         Rule("classifier/dense/bias", "classifier.dense.bias"),
         Rule("classifier/out/kernel", "classifier.out_proj.weight", LINEAR),
         Rule("classifier/out/bias", "classifier.out_proj.bias"))),
    ("bert", "sequence_classification"): Head(
        "BertForSequenceClassification",
        (Rule("classifier/classifier/kernel", "classifier.weight", LINEAR),
         Rule("classifier/classifier/bias", "classifier.bias")),
        holds_pooler=True),
}


def _distilbert_body(p: str) -> tuple[Rule, ...]:
    """DistilBERT's body: BERT's post-LN layers under other names, no token types, no pooler."""
    e, l = f"{p}embeddings.", f"{p}transformer.layer.{{i}}."
    return (
        Rule("encoder/embeddings/word/embedding", e + "word_embeddings.weight"),
        Rule("encoder/embeddings/position/embedding", e + "position_embeddings.weight"),
        Rule("encoder/embeddings/norm/scale", e + "LayerNorm.weight"),
        Rule("encoder/embeddings/norm/bias", e + "LayerNorm.bias"),
        Rule("encoder/layers/{i}/attention/query/kernel", l + "attention.q_lin.weight", HEADS_IN),
        Rule("encoder/layers/{i}/attention/query/bias", l + "attention.q_lin.bias", HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/key/kernel", l + "attention.k_lin.weight", HEADS_IN),
        Rule("encoder/layers/{i}/attention/key/bias", l + "attention.k_lin.bias", HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/value/kernel", l + "attention.v_lin.weight", HEADS_IN),
        Rule("encoder/layers/{i}/attention/value/bias", l + "attention.v_lin.bias", HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/out/kernel", l + "attention.out_lin.weight", HEADS_OUT),
        Rule("encoder/layers/{i}/attention/out/bias", l + "attention.out_lin.bias"),
        Rule("encoder/layers/{i}/attention_norm/scale", l + "sa_layer_norm.weight"),
        Rule("encoder/layers/{i}/attention_norm/bias", l + "sa_layer_norm.bias"),
        Rule("encoder/layers/{i}/intermediate/kernel", l + "ffn.lin1.weight", LINEAR),
        Rule("encoder/layers/{i}/intermediate/bias", l + "ffn.lin1.bias"),
        Rule("encoder/layers/{i}/output/kernel", l + "ffn.lin2.weight", LINEAR),
        Rule("encoder/layers/{i}/output/bias", l + "ffn.lin2.bias"),
        Rule("encoder/layers/{i}/output_norm/scale", l + "output_layer_norm.weight"),
        Rule("encoder/layers/{i}/output_norm/bias", l + "output_layer_norm.bias"),
    )


FAMILIES["distilbert"] = Family(
    arch="distilbert", model_type="distilbert", config_class="DistilBertConfig",
    base_class="DistilBertModel", prefix="distilbert.", body=_distilbert_body("distilbert."),
    ignored=("distilbert.embeddings.position_ids",))
HEADS[("distilbert", "mlm")] = Head(
    "DistilBertForMaskedLM", _mlm("vocab_transform", "vocab_layer_norm", "vocab_projector.bias"),
    aliases={"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"})
HEADS[("distilbert", "token_classification")] = Head("DistilBertForTokenClassification",
                                                     _TOKEN_HEAD)

@dataclasses.dataclass(frozen=True)
class Table:
    """A (family, task) pair: everything conversion knows about one transformers class."""

    family: Family
    task: str
    head: Head

    @property
    def arch(self) -> str:
        return self.family.arch

    @property
    def hf_class(self) -> str:
        return self.head.hf_class

    @property
    def head_prefix(self) -> str:
        return TASKS[self.task].head_prefix

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.family.body + self.head.rules

    @property
    def aliases(self) -> Mapping[str, str]:
        return self.head.aliases

    @property
    def ignored(self) -> tuple[str, ...]:
        return self.family.ignored

    def passengers(self, config: ModelConfig) -> list[str]:
        """HF names written to the checkpoint that this class does not load (see `holds_pooler`)."""
        pooler = [r.hf for r in expand(self, config) if r.flax.startswith("encoder/pooler/")]
        return [] if self.head.holds_pooler else pooler


def table_for(arch: str, task: str = "mlm") -> Table:
    if arch not in FAMILIES:
        raise FlaxlmError(f"no Hugging Face mapping for flaxlm arch {arch!r} "
                          f"(supported: {', '.join(sorted(FAMILIES))})")
    if (arch, task) not in HEADS:
        known = sorted(t for a, t in HEADS if a == arch)
        raise FlaxlmError(f"no Hugging Face mapping for the {task!r} head of arch {arch!r} "
                          f"(supported: {', '.join(known)})")
    return Table(FAMILIES[arch], task, HEADS[(arch, task)])


def table_for_class(model_type: str, hf_class: str) -> tuple[Table, bool] | None:
    """(table, is_base) for a transformers class name of a model_type; None if unknown. A base
    model (`BertModel`) maps to the family's MLM table with the head to be initialized fresh."""
    for family in FAMILIES.values():
        if family.model_type != model_type:
            continue
        if hf_class == family.base_class:
            return table_for(family.arch, "mlm"), True
        for (arch, task), head in HEADS.items():
            if arch == family.arch and head.hf_class == hf_class:
                return table_for(arch, task), False
    return None


def has_pooler(family: Family, tensors: Mapping[str, np.ndarray]) -> bool:
    """Whether a checkpoint (prefixed or a bare base model) stores the pooler."""
    return any(k in tensors for k in (f"{family.prefix}pooler.dense.weight",
                                      "pooler.dense.weight"))


def expand(table: Table, config: ModelConfig) -> list[Rule]:
    """The rows this config has, with `{i}` spelled out for every layer."""
    rows = []
    for rule in table.rules:
        if rule.when is not None and not rule.when(config):
            continue
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
        raise FlaxlmError(f"flaxlm parameter {unmapped[0]!r} has no entry in the "
                          f"{table.hf_class} mapping table ({len(unmapped)} unmapped)")
    out = {}
    for rule in rows:
        if rule.flax not in flat_params:
            raise FlaxlmError(f"flaxlm parameter {rule.flax!r} (→ {rule.hf}) is missing")
        out[rule.hf] = np.ascontiguousarray(rule.hook.to_hf(np.asarray(flat_params[rule.flax]),
                                                           config))
    return out


def _with_prefix(table: Table, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Base-model checkpoints (`BertModel`, `XLMRobertaModel`) store the body without prefix."""
    p = table.family.prefix
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
        raise FlaxlmError(f"checkpoint is missing tensor {missing} (part of the {table.hf_class} "
                          "head)")

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
                          f"{table.hf_class} mapping table; {len(extra)} unexpected in all)")
    return params, absent, dropped


def _projects(c: ModelConfig) -> bool:
    return c.embedding_dim != c.hidden_size


def _electra_body() -> tuple[Rule, ...]:
    """ELECTRA's body: BERT's under `electra.`, no pooler, plus the E→D `embeddings_project`
    when the embeddings are narrower than the hidden width. The flaxlm names are an `Encoder`'s;
    `flaxlm.convert.electra` renames a pre-training run's towers into this view."""
    bert = tuple(r for r in _body("electra.") if not r.flax.startswith("encoder/pooler/"))
    return bert + (
        Rule("encoder/embeddings_project/kernel", "electra.embeddings_project.weight", LINEAR,
             when=_projects),
        Rule("encoder/embeddings_project/bias", "electra.embeddings_project.bias", when=_projects))


FAMILIES["electra"] = Family(
    arch="electra", model_type="electra", config_class="ElectraConfig", base_class="ElectraModel",
    prefix="electra.", body=_electra_body(), ignored=_buffers("electra."))
# The discriminator of an ELECTRA pre-training run (workdir head "electra").
TASKS["electra"] = Task("AutoModelForPreTraining", "feature-extraction", "discriminator_head/")
HEADS[("electra", "electra")] = Head(
    "ElectraForPreTraining",
    (Rule("discriminator_head/dense/kernel", "discriminator_predictions.dense.weight", LINEAR),
     Rule("discriminator_head/dense/bias", "discriminator_predictions.dense.bias"),
     Rule("discriminator_head/prediction/kernel", "discriminator_predictions.dense_prediction.weight",
          LINEAR),
     Rule("discriminator_head/prediction/bias", "discriminator_predictions.dense_prediction.bias")))
# The generator of an ELECTRA pre-training run: its MLM head is tied to the shared word table.
HEADS[("electra", "mlm")] = Head(
    "ElectraForMaskedLM",
    _mlm("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head.bias"),
    aliases={"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"})
HEADS[("electra", "token_classification")] = Head("ElectraForTokenClassification", _TOKEN_HEAD)
HEADS[("electra", "sequence_classification")] = Head(
    "ElectraForSequenceClassification",
    (Rule("classifier/dense/kernel", "classifier.dense.weight", LINEAR),
     Rule("classifier/dense/bias", "classifier.dense.bias"),
     Rule("classifier/out/kernel", "classifier.out_proj.weight", LINEAR),
     Rule("classifier/out/bias", "classifier.out_proj.bias")))

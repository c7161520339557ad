"""What a conversion table is made of: rows `Rule(flax, hf, hook, when)`, the exact hooks between
flaxlm's and transformers' layouts, and the family / task / head records the tables are built from.

Layouts: flaxlm dense kernels are `[in, out]`, torch `nn.Linear` weights are `[out, in]`.
Attention keeps heads as a dimension in flaxlm: q/k/v kernels `[D, H, K]` and biases `[H, K]`, the
output kernel `[H, K, D]`; HF fuses heads into `H·K`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

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
HEADS_IN = Hook("[D,H,K]↔[H·K,D]", lambda x, c: x.reshape(x.shape[0], -1).T,
                lambda x, c: x.T.reshape(x.shape[1], *_heads(c)))
# q/k/v bias [H, K] ↔ [H·K]
HEADS_BIAS = Hook("[H,K]↔[H·K]", lambda x, c: x.reshape(-1), lambda x, c: x.reshape(*_heads(c)))
# attention output kernel [H, K, D] ↔ [D, H·K]
HEADS_OUT = Hook("[H,K,D]↔[D,H·K]", lambda x, c: x.reshape(-1, x.shape[-1]).T,
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
    # config.json ↔ ModelConfig, defined beside the family's table:
    # read_config(transformers config, source, family, task, hf_class) -> ModelConfig, refusing
    # what flaxlm does not compute; write_config(ModelConfig, family, task, hf_class, labels,
    # bos_id, eos_id) -> the transformers config object of that class.
    read_config: Callable[..., ModelConfig]
    write_config: Callable[..., Any]


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


def mlm_head(transform: str, norm: str, bias: str) -> tuple[Rule, ...]:
    """The MLM head: dense, LayerNorm and the output bias (the decoder is tied)."""
    return (
        Rule("mlm_head/transform/kernel", transform + ".weight", LINEAR),
        Rule("mlm_head/transform/bias", transform + ".bias"),
        Rule("mlm_head/norm/scale", norm + ".weight"),
        Rule("mlm_head/norm/bias", norm + ".bias"),
        Rule("mlm_head/bias", bias),
    )


# `*ForTokenClassification` of every family: one dense layer named `classifier`.
TOKEN_HEAD = (Rule("classifier/kernel", "classifier.weight",
                   LINEAR), Rule("classifier/bias", "classifier.bias"))

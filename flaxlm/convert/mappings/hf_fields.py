"""Fields of a transformers config as the families' translations read and write them."""

from __future__ import annotations

import numbers
from typing import Any

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig


def get(hf, key: str, kind: type, source: str) -> Any:
    """`hf.key` as an int or a float; anything else (a bool included) is one line naming it."""
    value = getattr(hf, key, None)
    ok = (isinstance(value, numbers.Integral) and not isinstance(value, bool)
          if kind is int else isinstance(value, numbers.Real) and not isinstance(value, bool))
    if not ok:
        noun = {int: "an integer", float: "a number"}[kind]
        raise FlaxlmError(f"{source}: key {key!r} must be {noun}, got {value!r}")
    return kind(value)


# config.json values a BERT-style post-LN encoder (BERT, XLM-R, ELECTRA) computes; others refused.
POST_LN_ENCODER_SUPPORTS = {
    "hidden_act": ("gelu", ),
    "position_embedding_type": (None, "absolute"),
    "is_decoder": (None, False),
    "add_cross_attention": (None, False),
    "tie_word_embeddings": (None, True)
}


def refuse_unsupported(hf, allowed_by_key: dict[str, tuple], source: str, what: str) -> None:
    """One line naming the first key whose value `what` (flaxlm's encoder) does not compute."""
    for key, allowed in allowed_by_key.items():
        if getattr(hf, key, None) not in allowed:
            raise FlaxlmError(f"{source}: {key}={getattr(hf, key, None)!r} is not supported by "
                              f"{what} (supported: {', '.join(map(repr, allowed))})")


def label_fields(labels: list[str] | None, num_labels: int) -> dict[str, dict]:
    """`id2label` / `label2id` of a classifier's config from its label names in id order (none
    without names: transformers then writes LABEL_0, ...)."""
    if not labels:
        return {}
    if len(labels) != num_labels:
        raise FlaxlmError(f"{len(labels)} label names for model.num_labels={num_labels}")
    return {
        "id2label": dict(enumerate(labels)),
        "label2id": {
            name: i
            for i, name in enumerate(labels)
        }
    }


def check_heads_fill_hidden(config: ModelConfig, hf_class: str) -> None:
    """Refuse a model whose heads are not hidden_size wide together: transformers' encoders have no
    head width of their own, they split hidden_size over the heads."""
    if config.head_dim and config.head_dim * config.num_heads != config.hidden_size:
        raise FlaxlmError(f"model.head_dim={config.head_dim} × num_heads={config.num_heads} != "
                          f"hidden_size={config.hidden_size}: {hf_class} cannot hold it")

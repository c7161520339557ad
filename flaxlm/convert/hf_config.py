"""HF `config.json` (parsed as plain data) ↔ flaxlm `ModelConfig`.

Only what flaxlm's encoder computes is accepted: a known `model_type`, known architecture class
names, exact GELU, absolute positions, no decoder or cross-attention. Anything else is refused by
name rather than imported into a model that would compute something different.
"""

from __future__ import annotations

import numbers
from typing import Any

from flaxlm.convert.mappings import TABLES, Table, table_for_arch
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig

BY_MODEL_TYPE: dict[str, Table] = {t.model_type: t for t in TABLES.values()}


def _get(cfg: dict, key: str, kind: type, source: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    ok = (isinstance(value, numbers.Integral) and not isinstance(value, bool) if kind is int
          else isinstance(value, numbers.Real) and not isinstance(value, bool) if kind is float
          else isinstance(value, kind))
    if not ok:
        noun = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise FlaxlmError(f"{source}: key {key!r} must be {noun}, got {value!r}")
    return kind(value)


def table_for_config(cfg: dict, source: str) -> tuple[Table, bool]:
    """The mapping table for an HF config, and whether it names the MLM class (head expected)."""
    if not isinstance(cfg, dict):
        raise FlaxlmError(f"{source}: expected a JSON object")
    if "auto_map" in cfg:
        raise FlaxlmError(f"{source}: 'auto_map' asks for custom model code; flaxlm never runs "
                          "code from a checkpoint (no trust_remote_code)")
    model_type = cfg.get("model_type")
    if model_type not in BY_MODEL_TYPE:
        raise FlaxlmError(f"{source}: model_type {model_type!r} is not supported (supported: "
                          f"{', '.join(sorted(BY_MODEL_TYPE))})")
    table = BY_MODEL_TYPE[model_type]
    architectures = cfg.get("architectures") or [table.base_class]
    known = (table.mlm_class, table.base_class)
    if not isinstance(architectures, list) or len(architectures) != 1:
        raise FlaxlmError(f"{source}: 'architectures' must name one class, got {architectures!r}")
    if architectures[0] not in known:
        raise FlaxlmError(f"{source}: architecture {architectures[0]!r} is not supported for "
                          f"model_type {model_type!r} (supported: {', '.join(known)})")
    return table, architectures[0] == table.mlm_class


def model_config_from_hf(cfg: dict, source: str) -> tuple[ModelConfig, Table, bool]:
    table, is_mlm = table_for_config(cfg, source)
    refused = {"hidden_act": ("gelu",), "position_embedding_type": (None, "absolute"),
               "is_decoder": (None, False), "add_cross_attention": (None, False),
               "tie_word_embeddings": (None, True)}
    for key, allowed in refused.items():
        if cfg.get(key) not in allowed:
            raise FlaxlmError(f"{source}: {key}={cfg.get(key)!r} is not supported by flaxlm's "
                              f"encoder (supported: {', '.join(map(repr, allowed))})")
    hidden, heads = _get(cfg, "hidden_size", int, source), _get(cfg, "num_attention_heads", int, source)
    if heads <= 0 or hidden % heads:
        raise FlaxlmError(f"{source}: hidden_size={hidden} is not divisible by "
                          f"num_attention_heads={heads}")
    config = ModelConfig(
        arch=table.arch,
        vocab_size=_get(cfg, "vocab_size", int, source),
        hidden_size=hidden,
        num_layers=_get(cfg, "num_hidden_layers", int, source),
        num_heads=heads,
        intermediate_size=_get(cfg, "intermediate_size", int, source),
        max_position_embeddings=_get(cfg, "max_position_embeddings", int, source),
        type_vocab_size=_get(cfg, "type_vocab_size", int, source, 2),
        pad_token_id=_get(cfg, "pad_token_id", int, source, 1 if table.arch == "xlmr" else 0),
        layer_norm_eps=_get(cfg, "layer_norm_eps", float, source, 1e-12),
        hidden_dropout=_get(cfg, "hidden_dropout_prob", float, source, 0.1),
        attention_dropout=_get(cfg, "attention_probs_dropout_prob", float, source, 0.1),
    )
    try:
        config.validate()
    except FlaxlmError as e:
        raise FlaxlmError(f"{source}: {e}") from None
    if config.arch == "xlmr" and config.max_seq_len <= 0:
        raise FlaxlmError(f"{source}: max_position_embeddings={config.max_position_embeddings} "
                          f"leaves no positions after the pad_token_id={config.pad_token_id} offset")
    return config, table, is_mlm


def hf_config(config: ModelConfig, *, bos_id: int | None = None, eos_id: int | None = None):
    """The transformers config object of the MLM class for a flaxlm model."""
    import transformers

    table = table_for_arch(config.arch)
    if config.head_dim and config.head_dim * config.num_heads != config.hidden_size:
        raise FlaxlmError(f"model.head_dim={config.head_dim} × num_heads={config.num_heads} != "
                          f"hidden_size={config.hidden_size}: {table.mlm_class} cannot hold it")
    config_class = getattr(transformers, table.config_class)
    return config_class(
        architectures=[table.mlm_class],
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=True,
        dtype="float32",
    )

"""HF `config.json` ↔ flaxlm `ModelConfig`, read through transformers' own config classes.

`config.json` is first checked as plain data (no custom code, a known `model_type` and class), then
built into the family's transformers config class (`BertConfig.from_dict`, ...), so a field the file
omits gets exactly the default transformers would use when it builds the PyTorch model. Only what
flaxlm's encoder computes is accepted: exact GELU, absolute positions, no decoder or
cross-attention. Anything else is refused by name rather than imported into a model that would
compute something different.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from flaxlm.convert.mappings import FAMILIES, HEADS, Family, Table, table_for, table_for_class
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig

BY_MODEL_TYPE: dict[str, Family] = {f.model_type: f for f in FAMILIES.values()}
# Loading choices that are ours, not the checkpoint's: fp32 and the default attention kernel.
_LOADING_KEYS = ("dtype", "torch_dtype", "attn_implementation")


@dataclasses.dataclass(frozen=True)
class HfModelConfig:
    model: ModelConfig
    table: Table
    is_base: bool  # an encoder-only class (`BertModel`): the MLM head is initialized fresh
    hf: Any  # the transformers config object
    labels: list[str]  # classifier label names, id order


def _get(hf, key: str, kind: type, source: str) -> Any:
    value = getattr(hf, key, None)
    ok = (isinstance(value, numbers.Integral) and not isinstance(value, bool) if kind is int
          else isinstance(value, numbers.Real) and not isinstance(value, bool))
    if not ok:
        noun = {int: "an integer", float: "a number"}[kind]
        raise FlaxlmError(f"{source}: key {key!r} must be {noun}, got {value!r}")
    return kind(value)


def table_for_config(cfg: dict, source: str) -> tuple[Table, bool]:
    """The (family, task) table for an HF config, and whether it names the family's base class."""
    if not isinstance(cfg, dict):
        raise FlaxlmError(f"{source}: expected a JSON object")
    if "auto_map" in cfg:
        raise FlaxlmError(f"{source}: 'auto_map' asks for custom model code; flaxlm never runs "
                          "code from a checkpoint (no trust_remote_code)")
    model_type = cfg.get("model_type")
    if model_type not in BY_MODEL_TYPE:
        raise FlaxlmError(f"{source}: model_type {model_type!r} is not supported (supported: "
                          f"{', '.join(sorted(BY_MODEL_TYPE))})")
    family = BY_MODEL_TYPE[model_type]
    architectures = cfg.get("architectures") or [family.base_class]
    if not isinstance(architectures, list) or len(architectures) != 1:
        raise FlaxlmError(f"{source}: 'architectures' must name one class, got {architectures!r}")
    found = table_for_class(model_type, architectures[0])
    if found is None:
        known = [family.base_class] + [h.hf_class for (a, _), h in HEADS.items()
                                       if a == family.arch]
        raise FlaxlmError(f"{source}: architecture {architectures[0]!r} is not supported for "
                          f"model_type {model_type!r} (supported: {', '.join(known)})")
    return found


def transformers_config(family: Family, cfg: dict, source: str):
    """`cfg` built into the family's transformers config class, as `from_pretrained` would."""
    import transformers

    config_class = getattr(transformers, family.config_class)
    fields = {k: v for k, v in cfg.items() if k not in _LOADING_KEYS and not k.startswith("_")}
    try:
        return config_class.from_dict(fields)
    except Exception as e:  # transformers' strict dataclass checks raise their own types
        reason = " ".join(str(e).split())
        raise FlaxlmError(f"{source}: {family.config_class} refuses it: {reason}") from None


def model_config_from_hf(cfg: dict, source: str) -> HfModelConfig:
    table, is_base = table_for_config(cfg, source)
    hf = transformers_config(table.family, cfg, source)
    if table.arch == "distilbert":
        return HfModelConfig(_distilbert_model_config(hf, source, table.task), table, is_base, hf,
                             [str(hf.id2label[i]) for i in range(hf.num_labels)])
    if table.arch == "electra":
        from flaxlm.convert.electra import electra_model_config
        return HfModelConfig(electra_model_config(hf, source), table, is_base, hf,
                             [str(hf.id2label[i]) for i in range(hf.num_labels)])
    refused = {"hidden_act": ("gelu",), "position_embedding_type": (None, "absolute"),
               "is_decoder": (None, False), "add_cross_attention": (None, False),
               "tie_word_embeddings": (None, True)}
    for key, allowed in refused.items():
        if getattr(hf, key, None) not in allowed:
            raise FlaxlmError(f"{source}: {key}={getattr(hf, key, None)!r} is not supported by "
                              f"flaxlm's encoder (supported: {', '.join(map(repr, allowed))})")
    hidden, heads = _get(hf, "hidden_size", int, source), _get(hf, "num_attention_heads", int, source)
    if heads <= 0 or hidden % heads:
        raise FlaxlmError(f"{source}: hidden_size={hidden} is not divisible by "
                          f"num_attention_heads={heads}")
    hidden_dropout = _get(hf, "hidden_dropout_prob", float, source)
    # transformers' classifiers fall back to the hidden dropout when this is unset.
    classifier_dropout = (hidden_dropout if getattr(hf, "classifier_dropout", None) is None
                          else _get(hf, "classifier_dropout", float, source))
    config = ModelConfig(
        arch=table.arch,
        vocab_size=_get(hf, "vocab_size", int, source),
        hidden_size=hidden,
        num_layers=_get(hf, "num_hidden_layers", int, source),
        num_heads=heads,
        intermediate_size=_get(hf, "intermediate_size", int, source),
        max_position_embeddings=_get(hf, "max_position_embeddings", int, source),
        type_vocab_size=_get(hf, "type_vocab_size", int, source),
        pad_token_id=_get(hf, "pad_token_id", int, source),
        layer_norm_eps=_get(hf, "layer_norm_eps", float, source),
        hidden_dropout=hidden_dropout,
        attention_dropout=_get(hf, "attention_probs_dropout_prob", float, source),
        num_labels=_get(hf, "num_labels", int, source),
        classifier_dropout=classifier_dropout,
    )
    try:
        config.validate()
    except FlaxlmError as e:
        raise FlaxlmError(f"{source}: {e}") from None
    if config.type_vocab_size == 0:
        raise FlaxlmError(f"{source}: type_vocab_size=0, but {table.hf_class} always adds a "
                          "token-type embedding")
    if config.arch == "xlmr" and config.max_seq_len <= 0:
        raise FlaxlmError(f"{source}: max_position_embeddings={config.max_position_embeddings} "
                          f"leaves no positions after the pad_token_id={config.pad_token_id} offset")
    labels = [str(hf.id2label[i]) for i in range(config.num_labels)]
    return HfModelConfig(config, table, is_base, hf, labels)


def label_fields(labels: list[str] | None, num_labels: int) -> dict[str, dict]:
    """`id2label` / `label2id` of a classifier's config from its label names in id order (none
    without names: transformers then writes LABEL_0, ...)."""
    if not labels:
        return {}
    if len(labels) != num_labels:
        raise FlaxlmError(f"{len(labels)} label names for model.num_labels={num_labels}")
    return {"id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)}}


def check_heads_fill_hidden(config: ModelConfig, hf_class: str) -> None:
    """Refuse a model whose heads are not hidden_size wide together: transformers' encoders have no
    head width of their own, they split hidden_size over the heads."""
    if config.head_dim and config.head_dim * config.num_heads != config.hidden_size:
        raise FlaxlmError(f"model.head_dim={config.head_dim} × num_heads={config.num_heads} != "
                          f"hidden_size={config.hidden_size}: {hf_class} cannot hold it")


def hf_config(config: ModelConfig, task: str = "mlm", *, bos_id: int | None = None,
              eos_id: int | None = None, labels: list[str] | None = None):
    """The transformers config object of the (family, task) class for a flaxlm model."""
    import transformers

    table = table_for(config.arch, task)
    if config.arch == "distilbert":
        return _distilbert_hf_config(config, table, task, labels)
    if config.arch == "electra":
        from flaxlm.convert.electra import electra_hf_config
        return electra_hf_config(config, task, labels)
    check_heads_fill_hidden(config, table.hf_class)
    if config.embedding_dim != config.hidden_size:
        raise FlaxlmError(f"model.embedding_size={config.embedding_size} != hidden_size="
                          f"{config.hidden_size}: {table.hf_class} has no embedding projection")
    if config.type_vocab_size == 0:
        raise FlaxlmError(f"model.type_vocab_size=0: {table.hf_class} always adds a token-type "
                          "embedding")
    task_fields = {}
    if task != "mlm":
        task_fields = {"num_labels": config.num_labels,
                       "classifier_dropout": config.classifier_dropout,
                       **label_fields(labels, config.num_labels)}
    config_class = getattr(transformers, table.family.config_class)
    return config_class(
        architectures=[table.hf_class],
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
        **task_fields,
    )


# DistilBERT's LayerNorms have a fixed epsilon (not in its config).
_DISTILBERT_EPS = 1e-12


def check_distilbert_token_dropout(config: ModelConfig) -> None:
    """DistilBertForTokenClassification drops out before its classifier with its one `dropout`,
    the body's rate: a classifier rate of its own could not be exported, so it is refused."""
    if config.arch == "distilbert" and config.classifier_dropout != config.hidden_dropout:
        raise FlaxlmError(
            f"model.classifier_dropout={config.classifier_dropout} != model.hidden_dropout="
            f"{config.hidden_dropout}: DistilBertForTokenClassification has one dropout rate "
            "(`dropout`) for the encoder and the classifier; set model.classifier_dropout="
            f"{config.hidden_dropout} (or both to one value)")


def _distilbert_model_config(hf, source: str, task: str) -> ModelConfig:
    """DistilBertConfig → ModelConfig: its own field names, no token types, eps fixed."""
    for key, allowed in {"activation": ("gelu",), "sinusoidal_pos_embds": (False,),
                         "tie_word_embeddings": (None, True)}.items():
        if getattr(hf, key, None) not in allowed:
            raise FlaxlmError(f"{source}: {key}={getattr(hf, key, None)!r} is not supported by "
                              f"flaxlm's encoder (supported: {', '.join(map(repr, allowed))})")
    hidden, heads = _get(hf, "dim", int, source), _get(hf, "n_heads", int, source)
    if heads <= 0 or hidden % heads:
        raise FlaxlmError(f"{source}: dim={hidden} is not divisible by n_heads={heads}")
    dropout = _get(hf, "dropout", float, source)
    config = ModelConfig(
        arch="distilbert", vocab_size=_get(hf, "vocab_size", int, source), hidden_size=hidden,
        num_layers=_get(hf, "n_layers", int, source), num_heads=heads,
        intermediate_size=_get(hf, "hidden_dim", int, source),
        max_position_embeddings=_get(hf, "max_position_embeddings", int, source),
        type_vocab_size=0, pad_token_id=_get(hf, "pad_token_id", int, source),
        layer_norm_eps=_DISTILBERT_EPS, hidden_dropout=dropout,
        attention_dropout=_get(hf, "attention_dropout", float, source),
        num_labels=_get(hf, "num_labels", int, source),
        # DistilBertForTokenClassification drops out with `dropout`, the sequence classifier
        # with `seq_classif_dropout`.
        classifier_dropout=(_get(hf, "seq_classif_dropout", float, source)
                            if task == "sequence_classification" else dropout))
    try:
        config.validate()
    except FlaxlmError as e:
        raise FlaxlmError(f"{source}: {e}") from None
    return config


def _distilbert_hf_config(config: ModelConfig, table: Table, task: str,
                          labels: list[str] | None):
    import transformers

    check_heads_fill_hidden(config, table.hf_class)
    if config.embedding_dim != config.hidden_size:
        raise FlaxlmError(f"model.embedding_size={config.embedding_size} != hidden_size="
                          f"{config.hidden_size}: {table.hf_class} has no embedding projection")
    if config.layer_norm_eps != _DISTILBERT_EPS:
        raise FlaxlmError(f"model.layer_norm_eps={config.layer_norm_eps}: {table.hf_class} "
                          f"always uses {_DISTILBERT_EPS}")
    task_fields = {}
    if task != "mlm":
        task_fields = {"num_labels": config.num_labels,
                       **label_fields(labels, config.num_labels)}
        if task == "sequence_classification":
            task_fields["seq_classif_dropout"] = config.classifier_dropout
        elif task == "token_classification":
            check_distilbert_token_dropout(config)
    return transformers.DistilBertConfig(
        architectures=[table.hf_class], vocab_size=config.vocab_size, dim=config.hidden_size,
        n_layers=config.num_layers, n_heads=config.num_heads,
        hidden_dim=config.intermediate_size, activation="gelu", dropout=config.hidden_dropout,
        attention_dropout=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings, sinusoidal_pos_embds=False,
        pad_token_id=config.pad_token_id, tie_word_embeddings=True, dtype="float32",
        **task_fields)

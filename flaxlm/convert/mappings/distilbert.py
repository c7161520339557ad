"""The DistilBERT family: BERT's post-LN layers under other names, no token types, no pooler."""

from __future__ import annotations

from flaxlm.convert.mappings.hf_fields import (check_heads_fill_hidden, get, label_fields,
                                               refuse_unsupported)
from flaxlm.convert.mappings.rules import (HEADS_BIAS, HEADS_IN, HEADS_OUT, LINEAR, TOKEN_HEAD,
                                           Family, Head, Rule, mlm_head)
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig


def body(p: str) -> tuple[Rule, ...]:
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


def read_config(hf, source: str, family: Family, task: str, hf_class: str) -> ModelConfig:
    """DistilBertConfig → ModelConfig: its own field names, no token types, eps fixed."""
    refuse_unsupported(
        hf, {
            "activation": ("gelu", ),
            "sinusoidal_pos_embds": (False, ),
            "tie_word_embeddings": (None, True)
        }, source, "flaxlm's encoder")
    hidden, heads = get(hf, "dim", int, source), get(hf, "n_heads", int, source)
    if heads <= 0 or hidden % heads:
        raise FlaxlmError(f"{source}: dim={hidden} is not divisible by n_heads={heads}")
    dropout = get(hf, "dropout", float, source)
    config = ModelConfig(
        arch="distilbert",
        vocab_size=get(hf, "vocab_size", int, source),
        hidden_size=hidden,
        num_layers=get(hf, "n_layers", int, source),
        num_heads=heads,
        intermediate_size=get(hf, "hidden_dim", int, source),
        max_position_embeddings=get(hf, "max_position_embeddings", int, source),
        type_vocab_size=0,
        pad_token_id=get(hf, "pad_token_id", int, source),
        layer_norm_eps=_DISTILBERT_EPS,
        hidden_dropout=dropout,
        attention_dropout=get(hf, "attention_dropout", float, source),
        num_labels=get(hf, "num_labels", int, source),
        # DistilBertForTokenClassification drops out with `dropout`, the sequence classifier
        # with `seq_classif_dropout`.
        classifier_dropout=(get(hf, "seq_classif_dropout", float, source)
                            if task == "sequence_classification" else dropout))
    try:
        config.validate()
    except FlaxlmError as e:
        raise FlaxlmError(f"{source}: {e}") from None
    return config


def write_config(config: ModelConfig, family: Family, task: str, hf_class: str,
                 labels: list[str] | None, bos_id: int | None, eos_id: int | None):
    """The `DistilBertConfig` of `hf_class` for a flaxlm model (no bos/eos ids: DistilBERT has
    none)."""
    import transformers  # seconds to import: only when a config is written

    check_heads_fill_hidden(config, hf_class)
    if config.embedding_dim != config.hidden_size:
        raise FlaxlmError(f"model.embedding_size={config.embedding_size} != hidden_size="
                          f"{config.hidden_size}: {hf_class} has no embedding projection")
    if config.layer_norm_eps != _DISTILBERT_EPS:
        raise FlaxlmError(f"model.layer_norm_eps={config.layer_norm_eps}: {hf_class} "
                          f"always uses {_DISTILBERT_EPS}")
    task_fields = {}
    if task != "mlm":
        task_fields = {"num_labels": config.num_labels, **label_fields(labels, config.num_labels)}
        if task == "sequence_classification":
            task_fields["seq_classif_dropout"] = config.classifier_dropout
        elif task == "token_classification":
            check_distilbert_token_dropout(config)
    return transformers.DistilBertConfig(
        architectures=[hf_class], vocab_size=config.vocab_size, dim=config.hidden_size,
        n_layers=config.num_layers, n_heads=config.num_heads, hidden_dim=config.intermediate_size,
        activation="gelu", dropout=config.hidden_dropout,
        attention_dropout=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings, sinusoidal_pos_embds=False,
        pad_token_id=config.pad_token_id, tie_word_embeddings=True, dtype="float32", **task_fields)


FAMILY = Family(arch="distilbert", model_type="distilbert", config_class="DistilBertConfig",
                base_class="DistilBertModel", prefix="distilbert.", body=body("distilbert."),
                ignored=("distilbert.embeddings.position_ids", ), read_config=read_config,
                write_config=write_config)

HEADS: dict[tuple[str, str], Head] = {
    ("distilbert", "mlm"): Head(
        "DistilBertForMaskedLM",
        mlm_head("vocab_transform", "vocab_layer_norm", "vocab_projector.bias"),
        aliases={"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}),
    ("distilbert", "token_classification"): Head("DistilBertForTokenClassification", TOKEN_HEAD),
    ("distilbert", "sequence_classification"): Head(
        "DistilBertForSequenceClassification",
        (Rule("classifier/pre_classifier/kernel", "pre_classifier.weight",
              LINEAR), Rule("classifier/pre_classifier/bias", "pre_classifier.bias"),
         Rule("classifier/classifier/kernel", "classifier.weight",
              LINEAR), Rule("classifier/classifier/bias", "classifier.bias"))),
}

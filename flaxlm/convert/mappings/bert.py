"""The BERT and XLM-R families: one post-LN body under two prefixes, and their heads."""

from __future__ import annotations

from flaxlm.convert.mappings.hf_fields import (check_heads_fill_hidden, get, label_fields,
                                               refuse_unsupported, POST_LN_ENCODER_SUPPORTS)
from flaxlm.convert.mappings.rules import (HEADS_BIAS, HEADS_IN, HEADS_OUT, LINEAR, TOKEN_HEAD,
                                           Family, Head, Rule, mlm_head)
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig


def _has_pooler(c: ModelConfig) -> bool:
    return c.pooler


def _has_token_types(c: ModelConfig) -> bool:
    return c.type_vocab_size > 0


def body(p: str) -> tuple[Rule, ...]:
    """The BERT-family post-LN body; `p` is the base-model prefix."""
    e, l = f"{p}embeddings.", f"{p}encoder.layer.{{i}}."
    return (
        Rule("encoder/embeddings/word/embedding", e + "word_embeddings.weight"),
        Rule("encoder/embeddings/position/embedding", e + "position_embeddings.weight"),
        Rule("encoder/embeddings/token_type/embedding", e + "token_type_embeddings.weight",
             when=_has_token_types),
        Rule("encoder/embeddings/norm/scale", e + "LayerNorm.weight"),
        Rule("encoder/embeddings/norm/bias", e + "LayerNorm.bias"),
        Rule("encoder/layers/{i}/attention/query/kernel", l + "attention.self.query.weight",
             HEADS_IN),
        Rule("encoder/layers/{i}/attention/query/bias", l + "attention.self.query.bias",
             HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/key/kernel", l + "attention.self.key.weight", HEADS_IN),
        Rule("encoder/layers/{i}/attention/key/bias", l + "attention.self.key.bias", HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/value/kernel", l + "attention.self.value.weight",
             HEADS_IN),
        Rule("encoder/layers/{i}/attention/value/bias", l + "attention.self.value.bias",
             HEADS_BIAS),
        Rule("encoder/layers/{i}/attention/out/kernel", l + "attention.output.dense.weight",
             HEADS_OUT),
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


def index_buffers(p: str) -> tuple[str, ...]:
    # Non-trainable index buffers older transformers saved (transformers rebuilds them).
    return (f"{p}embeddings.position_ids", f"{p}embeddings.token_type_ids")


# RoBERTa's `classifier` (dense → tanh → out_proj), which ELECTRA's copies with GELU.
DENSE_OUT_HEAD = (Rule("classifier/dense/kernel", "classifier.dense.weight",
                       LINEAR), Rule("classifier/dense/bias", "classifier.dense.bias"),
                  Rule("classifier/out/kernel", "classifier.out_proj.weight",
                       LINEAR), Rule("classifier/out/bias", "classifier.out_proj.bias"))

# --- config.json ↔ ModelConfig (BERT and XLM-R: the same fields) -------------------------------


def read_config(hf, source: str, family: Family, task: str, hf_class: str) -> ModelConfig:
    """A `BertConfig` / `XLMRobertaConfig` → ModelConfig; refuses what flaxlm does not compute."""
    refuse_unsupported(hf, POST_LN_ENCODER_SUPPORTS, source, "flaxlm's encoder")
    hidden, heads = get(hf, "hidden_size", int, source), get(hf, "num_attention_heads", int, source)
    if heads <= 0 or hidden % heads:
        raise FlaxlmError(f"{source}: hidden_size={hidden} is not divisible by "
                          f"num_attention_heads={heads}")
    hidden_dropout = get(hf, "hidden_dropout_prob", float, source)
    # transformers' classifiers fall back to the hidden dropout when this is unset.
    classifier_dropout = (hidden_dropout if getattr(hf, "classifier_dropout", None) is None else
                          get(hf, "classifier_dropout", float, source))
    config = ModelConfig(
        arch=family.arch,
        vocab_size=get(hf, "vocab_size", int, source),
        hidden_size=hidden,
        num_layers=get(hf, "num_hidden_layers", int, source),
        num_heads=heads,
        intermediate_size=get(hf, "intermediate_size", int, source),
        max_position_embeddings=get(hf, "max_position_embeddings", int, source),
        type_vocab_size=get(hf, "type_vocab_size", int, source),
        pad_token_id=get(hf, "pad_token_id", int, source),
        layer_norm_eps=get(hf, "layer_norm_eps", float, source),
        hidden_dropout=hidden_dropout,
        attention_dropout=get(hf, "attention_probs_dropout_prob", float, source),
        num_labels=get(hf, "num_labels", int, source),
        classifier_dropout=classifier_dropout,
    )
    try:
        config.validate()
    except FlaxlmError as e:
        raise FlaxlmError(f"{source}: {e}") from None
    if config.type_vocab_size == 0:
        raise FlaxlmError(f"{source}: type_vocab_size=0, but {hf_class} always adds a "
                          "token-type embedding")
    if config.arch == "xlmr" and config.max_seq_len <= 0:
        raise FlaxlmError(
            f"{source}: max_position_embeddings={config.max_position_embeddings} "
            f"leaves no positions after the pad_token_id={config.pad_token_id} offset")
    return config


def write_config(config: ModelConfig, family: Family, task: str, hf_class: str,
                 labels: list[str] | None, bos_id: int | None, eos_id: int | None):
    """The `BertConfig` / `XLMRobertaConfig` of `hf_class` for a flaxlm model."""
    import transformers  # seconds to import: only when a config is written

    check_heads_fill_hidden(config, hf_class)
    if config.embedding_dim != config.hidden_size:
        raise FlaxlmError(f"model.embedding_size={config.embedding_size} != hidden_size="
                          f"{config.hidden_size}: {hf_class} has no embedding projection")
    if config.type_vocab_size == 0:
        raise FlaxlmError(f"model.type_vocab_size=0: {hf_class} always adds a token-type "
                          "embedding")
    task_fields = {}
    if task != "mlm":
        task_fields = {
            "num_labels": config.num_labels,
            "classifier_dropout": config.classifier_dropout,
            **label_fields(labels, config.num_labels)
        }
    config_class = getattr(transformers, family.config_class)
    return config_class(
        architectures=[hf_class],
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


FAMILIES = (
    Family(arch="xlmr", model_type="xlm-roberta", config_class="XLMRobertaConfig",
           base_class="XLMRobertaModel", prefix="roberta.", body=body("roberta."),
           ignored=index_buffers("roberta."), read_config=read_config, write_config=write_config),
    # BERT checkpoints saved from pre-training also carry the next-sentence head.
    Family(arch="bert", model_type="bert", config_class="BertConfig", base_class="BertModel",
           prefix="bert.", body=body("bert."),
           ignored=index_buffers("bert.") + ("cls.seq_relationship.", ), read_config=read_config,
           write_config=write_config),
)

HEADS: dict[tuple[str, str], Head] = {
    ("xlmr", "mlm"): Head(
        "XLMRobertaForMaskedLM", mlm_head("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
        aliases={
            "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
            "lm_head.decoder.bias": "lm_head.bias"
        }),
    ("bert", "mlm"): Head(
        "BertForMaskedLM",
        mlm_head("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                 "cls.predictions.bias"), aliases={
                     "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                     "cls.predictions.decoder.bias": "cls.predictions.bias"
                 }),
    ("xlmr", "token_classification"): Head("XLMRobertaForTokenClassification", TOKEN_HEAD),
    ("bert", "token_classification"): Head("BertForTokenClassification", TOKEN_HEAD),
    ("xlmr", "sequence_classification"): Head("XLMRobertaForSequenceClassification",
                                              DENSE_OUT_HEAD),
    ("bert", "sequence_classification"): Head(
        "BertForSequenceClassification",
        (Rule("classifier/classifier/kernel", "classifier.weight",
              LINEAR), Rule("classifier/classifier/bias", "classifier.bias")), holds_pooler=True),
}

"""The BERT and XLM-R families: one post-LN body under two prefixes, and their heads."""

from __future__ import annotations

from flaxlm.convert.mappings.rules import (HEADS_BIAS, HEADS_IN, HEADS_OUT, LINEAR, TOKEN_HEAD,
                                           Family, Head, Rule, mlm_head)
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


def index_buffers(p: str) -> tuple[str, ...]:
    # Non-trainable index buffers older transformers saved (transformers rebuilds them).
    return (f"{p}embeddings.position_ids", f"{p}embeddings.token_type_ids")


# RoBERTa's `classifier` (dense → tanh → out_proj), which ELECTRA's copies with GELU.
DENSE_OUT_HEAD = (Rule("classifier/dense/kernel", "classifier.dense.weight", LINEAR),
                  Rule("classifier/dense/bias", "classifier.dense.bias"),
                  Rule("classifier/out/kernel", "classifier.out_proj.weight", LINEAR),
                  Rule("classifier/out/bias", "classifier.out_proj.bias"))

FAMILIES = (
    Family(arch="xlmr", model_type="xlm-roberta", config_class="XLMRobertaConfig",
           base_class="XLMRobertaModel", prefix="roberta.", body=body("roberta."),
           ignored=index_buffers("roberta.")),
    # BERT checkpoints saved from pre-training also carry the next-sentence head.
    Family(arch="bert", model_type="bert", config_class="BertConfig", base_class="BertModel",
           prefix="bert.", body=body("bert."),
           ignored=index_buffers("bert.") + ("cls.seq_relationship.",)),
)

HEADS: dict[tuple[str, str], Head] = {
    ("xlmr", "mlm"): Head(
        "XLMRobertaForMaskedLM", mlm_head("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
        aliases={"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
                 "lm_head.decoder.bias": "lm_head.bias"}),
    ("bert", "mlm"): Head(
        "BertForMaskedLM", mlm_head("cls.predictions.transform.dense",
                                    "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
        aliases={"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                 "cls.predictions.decoder.bias": "cls.predictions.bias"}),
    ("xlmr", "token_classification"): Head("XLMRobertaForTokenClassification", TOKEN_HEAD),
    ("bert", "token_classification"): Head("BertForTokenClassification", TOKEN_HEAD),
    ("xlmr", "sequence_classification"): Head("XLMRobertaForSequenceClassification",
                                              DENSE_OUT_HEAD),
    ("bert", "sequence_classification"): Head(
        "BertForSequenceClassification",
        (Rule("classifier/classifier/kernel", "classifier.weight", LINEAR),
         Rule("classifier/classifier/bias", "classifier.bias")),
        holds_pooler=True),
}

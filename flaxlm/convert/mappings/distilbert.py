"""The DistilBERT family: BERT's post-LN layers under other names, no token types, no pooler."""

from __future__ import annotations

from flaxlm.convert.mappings.rules import (HEADS_BIAS, HEADS_IN, HEADS_OUT, LINEAR, TOKEN_HEAD,
                                           Family, Head, Rule, mlm_head)


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


FAMILY = Family(
    arch="distilbert", model_type="distilbert", config_class="DistilBertConfig",
    base_class="DistilBertModel", prefix="distilbert.", body=body("distilbert."),
    ignored=("distilbert.embeddings.position_ids",))

HEADS: dict[tuple[str, str], Head] = {
    ("distilbert", "mlm"): Head(
        "DistilBertForMaskedLM",
        mlm_head("vocab_transform", "vocab_layer_norm", "vocab_projector.bias"),
        aliases={"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}),
    ("distilbert", "token_classification"): Head("DistilBertForTokenClassification", TOKEN_HEAD),
    ("distilbert", "sequence_classification"): Head(
        "DistilBertForSequenceClassification",
        (Rule("classifier/pre_classifier/kernel", "pre_classifier.weight", LINEAR),
         Rule("classifier/pre_classifier/bias", "pre_classifier.bias"),
         Rule("classifier/classifier/kernel", "classifier.weight", LINEAR),
         Rule("classifier/classifier/bias", "classifier.bias"))),
}

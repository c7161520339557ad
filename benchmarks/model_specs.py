"""A step spec's model: the flaxlm `ModelConfig` that the flaxlm step runner and the objectives'
makers (a distillation student) build from the same spec dict."""

from __future__ import annotations

# The preset each benchmark arch takes its positions, token types, padding id and LayerNorm epsilon
# from; the sizes come from the spec.
_FAMILY_PRESETS = {
    "distilbert": "distilbert-base-multilingual",
    "xlmr": "xlmr-base",
    "bert": "bert-base-multilingual"
}


def model_config(spec: dict):
    # flaxlm is imported here, not above: benchmarks/hf_flax_worker.py imports the objectives (and
    # so this module) in a virtualenv that has no flaxlm.
    from flaxlm.models.config import preset
    m = spec["model"]
    common = dict(vocab_size=spec["vocab"], hidden_size=m["hidden"], num_layers=m["layers"],
                  num_heads=m["heads"], intermediate_size=m["ffn"])
    if not spec.get("dropout", True):
        common.update(hidden_dropout=0.0, attention_dropout=0.0)
    if "attention_dropout" in spec:  # benchmarks.accelerator: 0, so a fused kernel can apply
        common.update(attention_dropout=spec["attention_dropout"])
    attention = spec.get("attention", "xla")
    if attention == "fused":  # the fused kernel of the platform the step runs on
        import jax
        tpu = jax.devices()[0].platform == "tpu" and spec["seq"] % 128 == 0
        attention = "splash" if tpu else "dot_product"
    common.update(attention=attention)
    if spec.get("num_labels"):
        common.update(num_labels=spec["num_labels"])
    if m.get("embedding"):  # factorized embeddings (ELECTRA); the same width as hidden at SELECTRA
        common.update(embedding_size=m["embedding"])
    return preset(_FAMILY_PRESETS.get(spec["arch"], "bert-base-multilingual"), **common)

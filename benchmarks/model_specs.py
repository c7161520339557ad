"""A step spec's model: the flaxlm `ModelConfig` that the flaxlm step runner and the objectives'
makers (a distillation student) build from the same spec dict."""

from __future__ import annotations


def model_config(spec: dict):
    # flaxlm is imported here, not above: benchmarks/hf_flax_worker.py imports the objectives (and
    # so this module) in a virtualenv that has no flaxlm.
    from flaxlm.models.config import ModelConfig
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
    if spec["arch"] == "distilbert":
        return ModelConfig(arch="distilbert", max_position_embeddings=512, type_vocab_size=0,
                           pad_token_id=0, layer_norm_eps=1e-12, **common)
    if spec["arch"] == "xlmr":
        return ModelConfig(arch="xlmr", max_position_embeddings=514, type_vocab_size=1,
                           pad_token_id=1, layer_norm_eps=1e-5, **common)
    return ModelConfig(arch="bert", max_position_embeddings=512, type_vocab_size=2,
                       pad_token_id=0, layer_norm_eps=1e-12, **common)

"""Masked language modelling: cross-entropy at the masked positions only."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from flaxlm.flops import encoder_train_flops
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import MaskedLMModel
from flaxlm.objectives.base import Sums


class MaskedLM:
    name = "mlm"

    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> MaskedLMModel:
        return MaskedLMModel(config, rngs=rngs)

    def loss_sums(self, model: MaskedLMModel, batch: Mapping[str, jax.Array], *, dtype,
                  dropout_key: jax.Array | None) -> Sums:
        logits_BxMxV = model(batch, dtype=dtype, dropout_key=dropout_key)
        labels_BxM = batch["masked_labels"]
        weights_BxM = batch["masked_weights"].astype(jnp.float32)
        # One max and one exp-sum over the vocabulary serve both the loss and the accuracy (a
        # separate argmax would be a third pass over B×M×V logits). A label tied with the max
        # counts as correct.
        max_BxM = jax.lax.stop_gradient(logits_BxMxV.max(axis=-1))
        shifted_BxMxV = logits_BxMxV - max_BxM[..., None]
        log_z_BxM = jnp.log(jnp.sum(jnp.exp(shifted_BxMxV), axis=-1))
        label_BxM = jnp.take_along_axis(shifted_BxMxV, labels_BxM[..., None], axis=-1)[..., 0]
        xent_BxM = log_z_BxM - label_BxM
        correct_BxM = (label_BxM >= 0.0).astype(jnp.float32)
        return {
            "loss_sum": jnp.sum(xent_BxM * weights_BxM),
            "correct_sum": jnp.sum(correct_BxM * weights_BxM),
            "weight_sum": jnp.sum(weights_BxM),
        }

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        weight = jnp.maximum(sums["weight_sum"], 1.0)
        return {"loss": sums["loss_sum"] / weight, "accuracy": sums["correct_sum"] / weight,
                "masked_tokens": sums["weight_sum"]}

    def train_flops_per_example(self, config: ModelConfig, seq_len: int,
                                predictions_per_example: int) -> float:
        d, v = config.hidden_size, config.vocab_size
        # MLM head at the masked positions: the D×D transform and the tied D×V projection.
        head_params = d * d + d * v
        return (encoder_train_flops(config, seq_len)
                + 6.0 * head_params * predictions_per_example)

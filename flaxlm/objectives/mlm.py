"""Masked language modelling with dynamic whole-word masking: cross-entropy at masked positions only."""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxlm.data import host_reading, masking, pipeline
from flaxlm.errors import FlaxlmError
from flaxlm.flops import encoder_train_flops
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import MaskedLMModel
from flaxlm.objectives.packed_predictions import packed_xent_sums
from flaxlm.run.protocol import Batch, DataContext, DataPlan, ObjectiveDefaults, Sums


@dataclasses.dataclass(frozen=True)
class MaskedLMConfig:
    """`objective.mlm.*` keys."""

    mask_rate: float = 0.15  # fraction of words chosen for prediction
    mask_token_rate: float = 0.8  # of chosen tokens: replaced by the mask id …
    random_token_rate: float = 0.1  # … or by a random non-special token; the rest stay unchanged
    max_predictions: int = 0  # prediction slots per row; 0: derived from seq_len and mask_rate
    # Prediction packing (flaxlm/objectives/packed_predictions.py): the vocabulary head over each
    # data-parallel shard's real predictions, in ceil(rows · mask_rate · seq_len · pack_headroom)
    # slots instead of rows · M; real predictions past that are left out and counted
    # (`dropped_predictions`). Off by default: see docs/benchmarks.md, "Prediction packing".
    pack_predictions: bool = False
    pack_headroom: float = 1.2

    def rates(self) -> masking.MaskingRates:
        return masking.MaskingRates(mask_rate=self.mask_rate, mask_token_rate=self.mask_token_rate,
                                    random_token_rate=self.random_token_rate,
                                    max_predictions=self.max_predictions)

    def validate(self, section: str = "objective.mlm") -> None:
        """`section`: where the user sets these keys (a distillation objective has its own).
        The rates' one validation is `MaskingRates.validate` (flaxlm/data/masking.py)."""
        self.rates().validate(section)
        if not self.pack_headroom > 0:
            raise FlaxlmError(f"{section}.pack_headroom={self.pack_headroom}: must be > 0 (the "
                              "packed head's slots per expected prediction)")


def masked_data(data: pipeline.DataConfig, config: MaskedLMConfig,
                type_vocab_size: int = 0) -> pipeline.DataConfig:
    """The pipeline settings with this objective's masking rates, and the share of two-segment
    rows decided for the model's token types (pipeline.two_segment_rate)."""
    return pipeline.two_segment_rate(
        dataclasses.replace(data, mask_rate=config.mask_rate,
                            mask_token_rate=config.mask_token_rate,
                            random_token_rate=config.random_token_rate,
                            max_predictions=config.max_predictions), type_vocab_size)


def mlm_batch_spec(global_batch: int, seq_len: int, predictions: int) -> dict:
    """The global MLM batch: packed tokens plus M prediction slots per row."""
    shapes = {
        "input_ids": ((global_batch, seq_len), jnp.int32),
        "attention_mask": ((global_batch, seq_len), jnp.int32),
        "token_type_ids": ((global_batch, seq_len), jnp.int32),
        "masked_positions": ((global_batch, predictions), jnp.int32),
        "masked_labels": ((global_batch, predictions), jnp.int32),
        "masked_weights": ((global_batch, predictions), jnp.float32)
    }
    return {k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in shapes.items()}


def masked_xent_sums(logits_BxMxV: jax.Array, labels_BxM: jax.Array,
                     weights_BxM: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Σ cross-entropy, Σ correct) over weighted prediction slots.

    One max and one exp-sum over the vocabulary serve both the loss and the accuracy (a separate
    argmax would be a third pass over B×M×V logits). A label tied with the max counts as correct.
    """
    max_BxM = jax.lax.stop_gradient(logits_BxMxV.max(axis=-1))
    shifted_BxMxV = logits_BxMxV - max_BxM[..., None]
    log_z_BxM = jnp.log(jnp.sum(jnp.exp(shifted_BxMxV), axis=-1))
    label_BxM = jnp.take_along_axis(shifted_BxMxV, labels_BxM[..., None], axis=-1)[..., 0]
    xent_BxM = log_z_BxM - label_BxM
    correct_BxM = (label_BxM >= 0.0).astype(jnp.float32)
    return jnp.sum(xent_BxM * weights_BxM), jnp.sum(correct_BxM * weights_BxM)


class MaskedLM(ObjectiveDefaults):
    name = "mlm"
    head = "mlm"  # the conversion head table export uses (flaxlm/convert/mappings/)
    Config = MaskedLMConfig
    summary_keys = ("loss", "accuracy")

    def __init__(self, config: MaskedLMConfig | None = None):
        self.config = config or MaskedLMConfig()
        self.config.validate()

    # -- model ---------------------------------------------------------------------------------
    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> MaskedLMModel:
        return MaskedLMModel(config, rngs=rngs)

    # -- data ----------------------------------------------------------------------------------
    def plan_data(self, ctx: DataContext) -> DataPlan:
        # With data.host_reading=own_units the host count is recorded: another one is refused.
        record, notes = host_reading.plan(ctx.data.host_reading, ctx.data.train_files,
                                          ctx.process_count)
        return DataPlan(run_record=record, notes=notes)

    def train_batches(self, ctx: DataContext,
                      start_example: int) -> Iterator[dict[str, np.ndarray]]:
        return pipeline.build_train_stream(masked_data(ctx.data, self.config,
                                                       ctx.type_vocab_size), ctx.tokenizer,
                                           seed=ctx.seed, host_batch_size=ctx.host_batch_size,
                                           start_example=start_example,
                                           process_index=ctx.process_index,
                                           process_count=ctx.process_count)

    def eval_batches(self, ctx: DataContext) -> list[dict[str, np.ndarray]]:
        return pipeline.build_eval_batches(masked_data(ctx.data, self.config, ctx.type_vocab_size),
                                           ctx.tokenizer, host_batch_size=ctx.host_batch_size,
                                           process_index=ctx.process_index,
                                           process_count=ctx.process_count)

    def predictions_per_row(self, data: pipeline.DataConfig) -> int:
        return pipeline.max_predictions(masked_data(data, self.config))

    def batch_spec(self, global_batch: int, data: pipeline.DataConfig) -> dict:
        return mlm_batch_spec(global_batch, data.seq_len, self.predictions_per_row(data))

    def real_counts(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {
            "tokens": float(np.count_nonzero(host_batch["attention_mask"])),
            "predictions": float(np.count_nonzero(host_batch["masked_weights"]))
        }

    # -- loss ----------------------------------------------------------------------------------
    def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
        return {
            "predictions": jnp.maximum(jnp.sum(batch["masked_weights"].astype(jnp.float32)), 1.0)
        }

    def loss(self, model: MaskedLMModel, batch: Batch, normalizers: Mapping[str, jax.Array], *,
             dtype, dropout_key: jax.Array | None) -> tuple[jax.Array, Sums]:
        weights_BxM = batch["masked_weights"].astype(jnp.float32)
        h_BxMxD = model.masked_hidden(batch, dtype=dtype, dropout_key=dropout_key)
        sums = {"weight_sum": jnp.sum(weights_BxM)}
        if self.config.pack_predictions:
            xent_sum, correct_sum, sums["dropped_sum"] = packed_xent_sums(
                model.prediction_logits, h_BxMxD, batch["masked_labels"], weights_BxM,
                seq_len=batch["input_ids"].shape[1], mask_rate=self.config.mask_rate,
                headroom=self.config.pack_headroom, xent_sums=masked_xent_sums)
        else:
            xent_sum, correct_sum = masked_xent_sums(model.prediction_logits(h_BxMxD),
                                                     batch["masked_labels"], weights_BxM)
        sums.update(loss_sum=xent_sum, correct_sum=correct_sum)
        return xent_sum / normalizers["predictions"], sums

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        weight = jnp.maximum(sums["weight_sum"], 1.0)
        return {
            "loss": sums["loss_sum"] / weight,
            "accuracy": sums["correct_sum"] / weight,
            "masked_tokens": sums["weight_sum"],
            # Real predictions the packed head had no room for (left out of loss and accuracy):
            # more than a rare few say objective.mlm.pack_headroom is too small for the data.
            **({
                "dropped_predictions": sums["dropped_sum"]
            } if "dropped_sum" in sums else {})
        }

    # -- cost ----------------------------------------------------------------------------------
    def train_flops(self, config: ModelConfig, seq_len: int, counts: Mapping[str, float]) -> float:
        d, v = config.hidden_size, config.vocab_size
        # The body per real token; the MLM head (D×D transform and tied D×V projection) per real
        # prediction, the only positions where it is computed.
        head_params = d * d + d * v
        return (counts["tokens"] * encoder_train_flops(config, seq_len) / seq_len +
                6.0 * head_params * counts["predictions"])

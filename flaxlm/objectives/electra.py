"""ELECTRA: a small generator fills masked words, the discriminator spots the replaced tokens.

Each step follows google-research/electra (commit 8a46635) `run_pretraining.py` and
`pretrain/pretrain_helpers.py`; docs/electra.md lists every switch with its upstream line.
Batches are MLM's (dynamic whole-word masking, `flaxlm.data.pipeline`; token-level, as upstream's
`pretrain_helpers.mask`, with `whole_word_masking=False`), with ELECTRA's split of the chosen
tokens: 85% become [MASK], 15% stay themselves, none are random (`pretrain_helpers.py:201-205`).
In the step:
  1. the generator predicts the masked tokens (cross-entropy over prediction slots,
     `get_softmax_output`, `run_pretraining.py:271-285`); with `uniform_generator` its logits are
     all zero (`run_pretraining.py:167-173`);
  2. a replacement is sampled at every slot, without gradient, as `_get_fake_data` +
     `sample_from_softmax` (`run_pretraining.py:220-230`, `pretrain_helpers.py:222-229`):
     argmax(logits / temperature − 1000 · [token = original if `disallow_correct`] + Gumbel
     noise), over the whole vocabulary (upstream excludes no token from sampling, special ones
     included);
  3. the discriminator reads the input with the samples put in, and learns, at every non-padding
     token, whether it differs from the original. A sample that equals the original counts as
     original (`run_pretraining.py:234-235`: labels = masked and changed); the loss is the mean
     sigmoid cross-entropy over `input_mask` (`run_pretraining.py:203-209`).
Total = generator_weight · generator loss + discriminator_weight · discriminator loss (1 and 50,
`configure_pretraining.py:38-39`). The two terms have different counts (prediction slots, tokens):
both come from `normalizers` over the whole global batch, so accumulation is exact.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxlm.data import pipeline
from flaxlm.errors import FlaxlmError
from flaxlm.flops import encoder_train_flops
from flaxlm.models.config import ModelConfig
from flaxlm.models.electra import ElectraPreTrainingModel, generator_config
from flaxlm.objectives.mlm import MaskedLM, MaskedLMConfig, masked_xent_sums
from flaxlm.objectives.rank_auc import roc_auc
from flaxlm.run.protocol import Batch, DataContext, DataPlan, ObjectiveDefaults, Sums

# Eval batches have no step key: their samples come from this key folded with the batch's ids, so
# an evaluation is repeatable and different batches draw different noise.
_EVAL_SAMPLING_SEED = 0


@dataclasses.dataclass(frozen=True)
class ElectraConfig:
    """`objective.electra.*` keys; defaults are google-research/electra's
    `configure_pretraining.py` (mask_prob :40, generator_hidden_size :75, generator_layers :74,
    temperature :79, disallow_correct :76, uniform_generator :69, gen_weight :38, disc_weight
    :39) and `pretrain_helpers.mask` (85% [MASK], the rest kept, :201-205), except
    `whole_word_masking` (flaxlm's default; upstream masks single tokens)."""

    mask_rate: float = 0.15  # fraction of words chosen for prediction
    mask_token_rate: float = 0.85  # of chosen tokens: replaced by [MASK] …
    random_token_rate: float = 0.0  # … or by a random token; the rest stay unchanged
    max_predictions: int = 0  # prediction slots per row; 0: derived from seq_len and mask_rate
    generator_hidden_fraction: float = 0.25  # generator hidden = fraction × discriminator hidden
    generator_layer_fraction: float = 1.0  # generator layers = fraction × discriminator layers
    temperature: float = 1.0  # of the generator's softmax when sampling replacements
    generator_weight: float = 1.0
    discriminator_weight: float = 50.0
    # Sample only tokens that differ from the original (upstream: −1000 on its logit).
    disallow_correct: bool = False
    # Replacements drawn uniformly from the vocabulary: the generator's logits are all zero.
    uniform_generator: bool = False
    # flaxlm's default; False: token-level masking, as upstream (`pretrain_helpers.mask`).
    whole_word_masking: bool = True

    def validate(self) -> None:
        def fail(key, rule):
            raise FlaxlmError(f"objective.electra.{key}={getattr(self, key)}: {rule}")

        self.masking().validate("objective.electra")  # the masking rates' one validation
        for key in ("generator_hidden_fraction", "generator_layer_fraction", "temperature"):
            if not getattr(self, key) > 0:
                fail(key, "must be positive")
        for key in ("generator_weight", "discriminator_weight"):
            if getattr(self, key) < 0:
                fail(key, "must be ≥ 0")

    def masked_data(self, data: pipeline.DataConfig) -> pipeline.DataConfig:
        return dataclasses.replace(data, whole_word_masking=self.whole_word_masking)

    def masking(self) -> MaskedLMConfig:
        return MaskedLMConfig(mask_rate=self.mask_rate, mask_token_rate=self.mask_token_rate,
                              random_token_rate=self.random_token_rate,
                              max_predictions=self.max_predictions)


def original_ids(batch: Batch) -> jax.Array:
    """`ids_BxL` before masking: the labels put back at the real prediction slots."""
    return replace_at(batch["input_ids"], batch["masked_positions"], batch["masked_weights"],
                      batch["masked_labels"])


def replace_at(ids_BxL, positions_BxM, weights_BxM, new_BxM) -> jax.Array:
    """`ids_BxL` with `new_BxM` written at the real slots; unused slots (weight 0, position 0)
    write nothing."""
    ids_BxL = jnp.asarray(ids_BxL)
    length = ids_BxL.shape[1]
    target_BxM = jnp.where(weights_BxM > 0, positions_BxM, length)  # out of range: dropped
    rows_Bx1 = jnp.arange(ids_BxL.shape[0])[:, None]
    return ids_BxL.at[rows_Bx1, target_BxM].set(new_BxM.astype(ids_BxL.dtype), mode="drop")


def sample_tokens(logits_BxMxV: jax.Array, key: jax.Array, temperature: float,
                  disallow_BxM: jax.Array | None = None) -> jax.Array:
    """Token ids drawn from softmax(logits / temperature) by the Gumbel-max trick, no gradient;
    `disallow_BxM`: a token id per slot whose logit is lowered by 1000 first (upstream's
    `disallow_correct`)."""
    gumbel_BxMxV = jax.random.gumbel(key, logits_BxMxV.shape, jnp.float32)
    return sample_with_noise(logits_BxMxV, gumbel_BxMxV, temperature, disallow_BxM)


def sample_with_noise(logits_BxMxV, gumbel_BxMxV, temperature: float,
                      disallow_BxM: jax.Array | None = None) -> jax.Array:
    """argmax(logits / temperature − 1000 · one_hot(disallow) + Gumbel noise), as upstream's
    `_get_fake_data` divides by the temperature before `sample_from_softmax` subtracts."""
    scaled_BxMxV = jax.lax.stop_gradient(logits_BxMxV) / temperature
    if disallow_BxM is not None:
        scaled_BxMxV = scaled_BxMxV - 1000.0 * jax.nn.one_hot(disallow_BxM, logits_BxMxV.shape[-1],
                                                              dtype=scaled_BxMxV.dtype)
    return jnp.argmax(scaled_BxMxV + gumbel_BxMxV, axis=-1).astype(jnp.int32)


def sigmoid_xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """−[y log σ(x) + (1−y) log(1−σ(x))], stable for large |x|."""
    return jax.nn.softplus(logits) - logits * labels


class Electra(ObjectiveDefaults):
    name = "electra"
    # The pair the workdir's checkpoint holds; `flaxlm export` writes the discriminator as
    # ElectraForPreTraining and the generator as ElectraForMaskedLM (flaxlm/convert/electra.py).
    head = "electra"
    Config = ElectraConfig
    summary_keys = ("loss", "generator_accuracy", "discriminator_accuracy", "replaced_recall")
    # `jax.random.split(step_key, 3)` gives the generator's dropout key, the sampling key (this
    # one) and the discriminator's dropout key.
    _SAMPLE_KEY = 1

    def __init__(self, config: ElectraConfig | None = None):
        self.config = config or ElectraConfig()
        self.config.validate()
        self._masked_lm = MaskedLM(self.config.masking())  # the batches are MLM's

    def generator_config(self, config: ModelConfig) -> ModelConfig:
        return generator_config(config, self.config.generator_hidden_fraction,
                                self.config.generator_layer_fraction)

    # -- model ---------------------------------------------------------------------------------
    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> ElectraPreTrainingModel:
        return ElectraPreTrainingModel(config, rngs=rngs, generator=self.generator_config(config))

    # -- data ----------------------------------------------------------------------------------
    def _context(self, ctx: DataContext) -> DataContext:
        return dataclasses.replace(ctx, data=self.config.masked_data(ctx.data))

    def plan_data(self, ctx: DataContext) -> DataPlan:
        return self._masked_lm.plan_data(self._context(ctx))

    def train_batches(self, ctx: DataContext,
                      start_example: int) -> Iterator[dict[str, np.ndarray]]:
        return self._masked_lm.train_batches(self._context(ctx), start_example)

    def eval_batches(self, ctx: DataContext) -> list[dict[str, np.ndarray]]:
        return self._masked_lm.eval_batches(self._context(ctx))

    def batch_spec(self, global_batch: int, data: pipeline.DataConfig) -> dict:
        return self._masked_lm.batch_spec(global_batch, data)

    def real_counts(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        return self._masked_lm.real_counts(host_batch)

    # -- loss ----------------------------------------------------------------------------------
    def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
        return {
            "predictions": jnp.maximum(jnp.sum(batch["masked_weights"].astype(jnp.float32)), 1.0),
            "tokens": jnp.maximum(jnp.sum(batch["attention_mask"].astype(jnp.float32)), 1.0)
        }

    def sampling_noise(self, dropout_key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """The Gumbel noise `loss` adds to the generator's logits_BxMxV for this step key (what a
        reference implementation needs to draw the same replacements)."""
        sample_key = jax.random.split(dropout_key, 3)[self._SAMPLE_KEY]
        return jax.random.gumbel(sample_key, shape, jnp.float32)

    def _forward(self, model: ElectraPreTrainingModel, batch: Batch, *, dtype,
                 dropout_key: jax.Array | None) -> dict[str, jax.Array]:
        """The generator's slot outputs, the samples, and the discriminator's logits_BxL with
        their labels replaced_BxL."""
        if dropout_key is None:
            generator_key = discriminator_key = None
            sample_key = jax.random.fold_in(jax.random.key(_EVAL_SAMPLING_SEED),
                                            jnp.sum(batch["input_ids"]))
        else:
            keys = jax.random.split(dropout_key, 3)
            generator_key, sample_key, discriminator_key = keys[0], keys[self._SAMPLE_KEY], keys[2]
        weights_BxM = batch["masked_weights"].astype(jnp.float32)
        labels_BxM = batch["masked_labels"]
        logits_BxMxV = model.generator_logits(batch, dtype=dtype, dropout_key=generator_key)
        if self.config.uniform_generator:
            # Upstream builds no generator tower then; its (constant) loss is log V.
            logits_BxMxV = jnp.zeros_like(logits_BxMxV)
        xent_sum, correct_sum = masked_xent_sums(logits_BxMxV, labels_BxM, weights_BxM)

        sampled_BxM = sample_tokens(logits_BxMxV, sample_key, self.config.temperature,
                                    labels_BxM if self.config.disallow_correct else None)
        original_BxL = original_ids(batch)
        corrupted_BxL = replace_at(original_BxL, batch["masked_positions"], weights_BxM,
                                   sampled_BxM)
        real_BxL = batch["attention_mask"] > 0
        replaced_BxL = ((corrupted_BxL != original_BxL) & real_BxL).astype(jnp.float32)
        disc_logits_BxL = model.discriminator_logits(corrupted_BxL, batch["attention_mask"],
                                                     batch.get("token_type_ids"), dtype=dtype,
                                                     dropout_key=discriminator_key)
        # Slots whose input was changed ([MASK], or a random token) and slots left as themselves:
        # the generator's accuracy differs a lot between them (a kept token is in its input).
        seen_BxM = jnp.take_along_axis(batch["input_ids"], batch["masked_positions"], axis=1)
        changed_BxM = (seen_BxM != labels_BxM).astype(jnp.float32) * weights_BxM
        label_logit_BxM = jnp.take_along_axis(logits_BxMxV, labels_BxM[..., None], -1)[..., 0]
        right_BxM = (label_logit_BxM >= logits_BxMxV.max(axis=-1)).astype(jnp.float32)
        return {
            "xent_sum": xent_sum,
            "correct_sum": correct_sum,
            "disc_logits_BxL": disc_logits_BxL,
            "replaced_BxL": replaced_BxL,
            "changed_BxM": changed_BxM,
            "right_BxM": jax.lax.stop_gradient(right_BxM),
            "sampled_right_BxM": (sampled_BxM == labels_BxM).astype(jnp.float32)
        }

    def _sums(self, batch, out: Mapping[str, jax.Array]) -> dict:
        disc_logits_BxL, replaced_BxL = out["disc_logits_BxL"], out["replaced_BxL"]
        weights_BxM = batch["masked_weights"].astype(jnp.float32)
        changed_BxM = out["changed_BxM"]
        tokens_BxL = (batch["attention_mask"] > 0).astype(jnp.float32)
        predicted_BxL = (disc_logits_BxL > 0).astype(jnp.float32) * tokens_BxL
        correct_BxL = (predicted_BxL == replaced_BxL).astype(jnp.float32) * tokens_BxL
        return {
            "generator_loss_sum": out["xent_sum"],
            "generator_correct_sum": out["correct_sum"],
            "predictions": jnp.sum(weights_BxM),
            "changed_slots": jnp.sum(changed_BxM),
            "changed_correct": jnp.sum(out["right_BxM"] * changed_BxM),
            "kept_correct": jnp.sum(out["right_BxM"] * (weights_BxM - changed_BxM)),
            "sampled_correct": jnp.sum(out["sampled_right_BxM"] * weights_BxM),
            "discriminator_loss_sum": jnp.sum(
                sigmoid_xent(disc_logits_BxL, replaced_BxL) * tokens_BxL),
            "discriminator_correct_sum": jnp.sum(correct_BxL),
            "tokens": jnp.sum(tokens_BxL),
            "replaced": jnp.sum(replaced_BxL),
            "predicted_replaced": jnp.sum(predicted_BxL),
            "true_replaced": jnp.sum(predicted_BxL * replaced_BxL),
        }

    def loss(self, model: ElectraPreTrainingModel, batch: Batch, normalizers: Mapping[str,
                                                                                      jax.Array], *,
             dtype, dropout_key: jax.Array | None) -> tuple[jax.Array, Sums]:
        outputs = self._forward(model, batch, dtype=dtype, dropout_key=dropout_key)
        sums = self._sums(batch, outputs)
        total = (
            self.config.generator_weight * sums["generator_loss_sum"] / normalizers["predictions"] +
            self.config.discriminator_weight * sums["discriminator_loss_sum"] /
            normalizers["tokens"])
        return total, sums

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        predictions = jnp.maximum(sums["predictions"], 1.0)
        tokens = jnp.maximum(sums["tokens"], 1.0)
        generator_loss = sums["generator_loss_sum"] / predictions
        discriminator_loss = sums["discriminator_loss_sum"] / tokens
        return {
            "loss": (self.config.generator_weight * generator_loss +
                     self.config.discriminator_weight * discriminator_loss),
            "generator_loss": generator_loss,
            "generator_accuracy": sums["generator_correct_sum"] / predictions,
            # At slots whose input was [MASK] (or random) and at slots kept as themselves.
            "generator_accuracy_masked": sums["changed_correct"] /
            jnp.maximum(sums["changed_slots"], 1.0),
            "generator_accuracy_kept": sums["kept_correct"] /
            jnp.maximum(sums["predictions"] - sums["changed_slots"], 1.0),
            # How often the sample equals the original (upstream's sampled_masked_lm_accuracy):
            # those slots are labelled "original".
            "sampled_accuracy": sums["sampled_correct"] / predictions,
            "discriminator_loss": discriminator_loss,
            "discriminator_accuracy": sums["discriminator_correct_sum"] / tokens,
            "replaced_precision": sums["true_replaced"] /
            jnp.maximum(sums["predicted_replaced"], 1.0),
            "replaced_recall": sums["true_replaced"] / jnp.maximum(sums["replaced"], 1.0),
            # Fraction of the discriminator's tokens that are fakes; 1 − it is the accuracy of
            # always answering "original".
            "replaced_rate": sums["replaced"] / tokens,
            "masked_tokens": sums["predictions"],
        }

    # -- evaluation ----------------------------------------------------------------------------
    def eval_outputs(self, model: ElectraPreTrainingModel, batch: Batch, *,
                     dtype) -> Mapping[str, jax.Array]:
        outputs = self._forward(model, batch, dtype=dtype, dropout_key=None)
        return {
            "sums": self._sums(batch, outputs),
            "disc_logits_BxL": outputs["disc_logits_BxL"],
            "replaced_BxL": outputs["replaced_BxL"]
        }

    def eval_metrics(self, outputs: list[Mapping[str, np.ndarray]],
                     batches: list[Mapping[str, np.ndarray]],
                     plan: DataPlan | None = None) -> dict[str, float]:
        """The training metrics over all batches, plus the AUC of the discriminator's scores for
        "replaced" over every real token (needs every score, hence here on the host)."""
        totals = jax.tree.map(lambda *xs: np.sum(xs, axis=0), *[o["sums"] for o in outputs])
        metrics = {k: float(v) for k, v in self.metrics(totals).items()}
        real = [np.asarray(b["attention_mask"]) > 0 for b in batches]
        scores = np.concatenate([o["disc_logits_BxL"][r] for o, r in zip(outputs, real)])
        labels = np.concatenate([o["replaced_BxL"][r] for o, r in zip(outputs, real)])
        metrics["replaced_auc"] = roc_auc(scores, labels > 0)
        return metrics

    # -- cost ----------------------------------------------------------------------------------
    def train_flops(self, config: ModelConfig, seq_len: int, counts: Mapping[str, float]) -> float:
        """Both towers' bodies and projections per real token, the discriminator head per token,
        the generator's MLM head per real prediction (the only positions it is computed at)."""
        generator = self.generator_config(config)
        e, v = config.embedding_dim, config.vocab_size
        per_token = sum(encoder_train_flops(c, seq_len) / seq_len for c in (config, generator))
        for tower in (config, generator):
            if tower.hidden_size != e:
                per_token += 6.0 * (e * tower.hidden_size + tower.hidden_size)
        d = config.hidden_size
        per_token += 6.0 * (d * d + d + d + 1)
        per_prediction = 6.0 * (generator.hidden_size * e + e + e * v + v)
        return counts["tokens"] * per_token + counts["predictions"] * per_prediction

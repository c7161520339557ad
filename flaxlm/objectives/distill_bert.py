"""DistilBERT-style distillation (arXiv 1910.01108): soft targets + MLM + hidden-state cosine.

loss = alpha_ce · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) at every real token
     + alpha_mlm · the student's MLM cross-entropy at the masked positions
     + alpha_cos · (1 − cos(student, teacher last hidden states)) at the real (non-padding) tokens,
each term averaged over its own count in the whole batch. The KL differs from the soft-target
cross-entropy by the teacher's entropy, a constant: same gradient, and 0 for a perfect student.
This is transformers' examples/research_projects/distillation distiller.py `step()` (at 1607444):
the soft targets cover every position of the attention mask unless `restrict_ce_to_mask` (its
train.py flag, off in the README command) limits them to the masked positions; `KLDivLoss(
reduction="batchmean")` divides by the selected positions. Covering every token computes the
vocabulary logits of both models at every position (B×L×V, the memory a 119k vocabulary costs
upstream too); `restrict_ce_to_mask=True` keeps them at the M masked slots.
Defaults are the published training command (README: `--alpha_ce 5.0 --alpha_mlm 2.0
--alpha_cos 1.0`, train.py's `--temperature 2.0`); the teacher sees the student's masked input, as
in its distiller.py. The student starts from the teacher's embeddings, MLM head and layers
[0, 2, 4, 7, 9, 11] (`teacher_layers`), as its scripts/extract_distilbert.py does for a 12-layer
teacher.

Where flaxlm departs, on purpose:
  * Positions to predict: upstream draws 15% of the batch's tokens with probability ∝
    count(token)^-0.7 (train.py `--mlm_smoothing 0.7`, token_probs from a counts pass over the
    corpus; distiller.py `prepare_batch_mlm` multinomial over the whole batch); flaxlm draws 15% of
    each row's words uniformly (whole-word masking, the pipeline every objective shares), with the
    same 80/10/10 replacement. Frequency weighting needs corpus counts flaxlm does not keep.
  * `freeze_position_embeddings` (train.py `--freeze_pos_embs`) is off by default: upstream's
    `freeze_pos_embeddings` only acts on RoBERTa and GPT-2 students, so the README command leaves
    a DistilBERT student's positions trained, as here. Set it for an XLM-R student to match.
  * Adam β2 is 0.98 upstream (distiller.py's AdamW `betas=(0.9, 0.98)`): train.b2, which
    configs/distil_mbert.py sets.

A student with a pruned vocabulary (a subset of the teacher's tokens) reads its own tokenizer's
batches; the teacher gets the same tokens under its own ids, and its logits are gathered over the
student's tokens before the softmax. Its embeddings and MLM head then cannot come from the
teacher's (other rows): start it from a pruned checkpoint with init_from.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import MaskedLMModel, gather_positions
from flaxlm.objectives import teacher as teachers
from flaxlm.objectives.mlm import masked_xent_sums
from flaxlm.run.protocol import Batch, DataContext, DataPlan, InitRule, Sums
from flaxlm.run.workdir import ELECTRA_HEAD


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(teachers.TeacherConfig):
    """`objective.distilbert.*` keys."""

    temperature: float = 2.0
    alpha_ce: float = 5.0  # soft targets
    alpha_mlm: float = 2.0  # the student's own MLM loss
    alpha_cos: float = 1.0  # cosine between last hidden states (needs equal widths)
    # Teacher layer each student layer starts from ("": the student starts fresh, or from
    # init_from; init_from, when set, wins).
    teacher_layers: str = "0,2,4,7,9,11"
    # Soft targets only at the masked positions (upstream's --restrict_ce_to_mask; off: every
    # real token, as the README command trains).
    restrict_ce_to_mask: bool = False
    # Keep the student's position embeddings where they start (upstream's --freeze_pos_embs,
    # which acts on RoBERTa students only; see the module docstring).
    freeze_position_embeddings: bool = False

    def layers(self) -> tuple[int, ...]:
        try:
            return tuple(int(i) for i in self.teacher_layers.split(",") if i.strip())
        except ValueError:
            raise FlaxlmError(f"objective.distilbert.teacher_layers must be comma-separated "
                              f"layer numbers, got {self.teacher_layers!r}") from None


def soft_target_sum(student_BxMxV: jax.Array, teacher_BxMxV: jax.Array, weights_BxM: jax.Array,
                    temperature: float) -> jax.Array:
    """Σ over weighted rows (masked slots, or every position) of
    T² · KL(softmax(teacher / T) ‖ softmax(student / T))."""
    log_s_BxMxV = jax.nn.log_softmax(student_BxMxV.astype(jnp.float32) / temperature, axis=-1)
    log_t_BxMxV = jax.nn.log_softmax(teacher_BxMxV.astype(jnp.float32) / temperature, axis=-1)
    kl_BxM = jnp.sum(jnp.exp(log_t_BxMxV) * (log_t_BxMxV - log_s_BxMxV), axis=-1)
    return temperature ** 2 * jnp.sum(kl_BxM * weights_BxM)


def cosine_loss_sum(student_BxLxD: jax.Array, teacher_BxLxD: jax.Array,
                    mask_BxL: jax.Array) -> jax.Array:
    """Σ over real tokens of 1 − cos(student, teacher); the squared norms get 1e-12 so a zero
    vector gives cos 0, not NaN."""
    s_BxLxD, t_BxLxD = student_BxLxD.astype(jnp.float32), teacher_BxLxD.astype(jnp.float32)
    dot_BxL = jnp.sum(s_BxLxD * t_BxLxD, axis=-1)
    norms_BxL = jnp.sqrt((jnp.sum(jnp.square(s_BxLxD), axis=-1) + 1e-12) *
                         (jnp.sum(jnp.square(t_BxLxD), axis=-1) + 1e-12))
    return jnp.sum((1.0 - dot_BxL / norms_BxL) * mask_BxL.astype(jnp.float32))


POSITIONS = "encoder/embeddings/position/embedding"


class DistilBertModel(MaskedLMModel):
    """The student (encoder + MLM head, exported as such) and the frozen `teacher` MLM model."""
    def __init__(self, config: ModelConfig, teacher_config: ModelConfig, *, teacher_dtype,
                 rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        self.teacher = MaskedLMModel(teacher_config, rngs=rngs)
        if teacher_dtype != jnp.float32:
            teachers.cast_params(self.teacher, teacher_dtype)


class DistilBert(teachers.Distillation):
    name = "distilbert"
    Config = DistilBertConfig
    summary_keys = ("loss", "soft_ce", "mlm_loss", "cosine", "accuracy")
    vocabulary_note = "; teacher logits gathered over it"

    def __init__(self, config: DistilBertConfig | None = None):
        super().__init__(config or DistilBertConfig())
        c = self.config
        if c.temperature <= 0:
            raise FlaxlmError(f"objective.distilbert.temperature must be positive, got "
                              f"{c.temperature}")
        alphas = {"alpha_ce": c.alpha_ce, "alpha_mlm": c.alpha_mlm, "alpha_cos": c.alpha_cos}
        if min(alphas.values()) < 0 or not sum(alphas.values()):
            raise FlaxlmError(f"objective.distilbert loss weights {alphas} must be ≥ 0 with at "
                              "least one positive")
        c.layers()

    # -- model and weights ---------------------------------------------------------------------
    def resolved_teacher(self, student: ModelConfig) -> ModelConfig:
        return teachers.without_pooler(self.full_teacher(student))

    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> DistilBertModel:
        teacher = self.resolved_teacher(config)
        layers = self.config.layers()
        if layers and (len(layers) != config.num_layers or not all(0 <= j < teacher.num_layers
                                                                   for j in layers)):
            raise FlaxlmError(
                f"objective.distilbert.teacher_layers={self.config.teacher_layers!r} must name "
                f"one of the teacher's {teacher.num_layers} layers for each of the student's "
                f"{config.num_layers} (or be empty)")
        if self.config.alpha_cos and teacher.hidden_size != config.hidden_size:
            raise FlaxlmError(
                f"objective.distilbert.alpha_cos={self.config.alpha_cos} compares hidden states, "
                f"but the student is {config.hidden_size} wide and the teacher "
                f"{teacher.hidden_size}: set alpha_cos=0")
        self.check_vocabulary(config, teacher)
        return DistilBertModel(config, teacher, rngs=rngs,
                               teacher_dtype=self.teacher_dtype(jnp.float32))

    def init_rules(self, has_init_from: bool) -> tuple[InitRule, ...]:
        source = teachers.TEACHER_SOURCE
        rules = list(super().init_rules(has_init_from))
        if not has_init_from and self.config.layers():
            if self.student_to_teacher is None:  # a pruned vocabulary has other rows
                rules += [InitRule("encoder/embeddings", source), InitRule("mlm_head", source)]
            rules += [
                InitRule(f"encoder/layers/{i}", source, f"encoder/layers/{j}")
                for i, j in enumerate(self.config.layers())
            ]
        return (*rules, InitRule("teacher", source, ""))

    def plan_data(self, ctx: DataContext) -> DataPlan:
        head = teachers.teacher_head(self.config.teacher) if self.config.teacher else "mlm"
        if head == ELECTRA_HEAD:
            raise FlaxlmError(
                f"objective.distilbert.teacher={self.config.teacher} is an ELECTRA pre-training "
                "run, whose discriminator has no MLM head for DistilBERT's soft targets: distil "
                "it with objective minilmv2 (its teacher is the discriminator), or give an MLM "
                "teacher")
        if head != "mlm":
            # Its MLM head would otherwise start fresh: random soft targets.
            raise FlaxlmError(f"objective.distilbert.teacher={self.config.teacher} holds a "
                              f"{head} model; DistilBERT's soft targets need an MLM teacher")
        return super().plan_data(ctx)

    def lr_scales(self, config: ModelConfig, param_paths: list[str]) -> dict[str, float] | None:
        # A zero scale stops the whole update, weight decay included: the table stays as loaded.
        if not self.config.freeze_position_embeddings:
            return None
        return {POSITIONS: 0.0}

    # -- loss ----------------------------------------------------------------------------------
    def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
        return {
            "predictions": jnp.maximum(jnp.sum(batch["masked_weights"].astype(jnp.float32)), 1.0),
            "tokens": jnp.maximum(jnp.sum(batch["attention_mask"].astype(jnp.float32)), 1.0)
        }

    def outputs(self, model: DistilBertModel, batch: Batch, *, dtype, dropout_key):
        """(student hidden states, student logits, teacher hidden states, teacher logits over the
        student's vocabulary): hidden states at every position, logits at the N rows the soft
        targets cover (N = M masked slots with `restrict_ce_to_mask`, else all L positions)."""
        ids_BxL, mask_BxL = batch["input_ids"], batch["attention_mask"]
        types_BxL = batch.get("token_type_ids")

        def rows(x_BxLxD):
            if self.config.restrict_ce_to_mask:
                return gather_positions(x_BxLxD, batch["masked_positions"])
            return x_BxLxD

        student_BxLxD = model.encoder(ids_BxL, mask_BxL, types_BxL, dtype=dtype,
                                      dropout_key=dropout_key)
        student_BxNxV = model.mlm_head(rows(student_BxLxD), model.encoder.embeddings.word)
        teacher = model.teacher
        teacher_BxLxD = teacher.encoder(teachers.to_teacher_ids(ids_BxL, self.student_to_teacher),
                                        mask_BxL, types_BxL, dtype=self.teacher_dtype(dtype))
        teacher_BxNxVt = teacher.mlm_head(rows(teacher_BxLxD), teacher.encoder.embeddings.word)
        teacher_BxNxV = (teacher_BxNxVt if self.student_to_teacher is None else jnp.take(
            teacher_BxNxVt, jnp.asarray(self.student_to_teacher), axis=-1))
        return (student_BxLxD, student_BxNxV, jax.lax.stop_gradient(teacher_BxLxD),
                jax.lax.stop_gradient(teacher_BxNxV))

    def loss(self, model: DistilBertModel, batch: Batch, normalizers: Mapping[str, jax.Array], *,
             dtype, dropout_key: jax.Array | None) -> tuple[jax.Array, Sums]:
        c = self.config
        student_BxLxD, student_BxNxV, teacher_BxLxD, teacher_BxNxV = self.outputs(
            model, batch, dtype=dtype, dropout_key=dropout_key)
        weights_BxM = batch["masked_weights"].astype(jnp.float32)
        mask_BxL = batch["attention_mask"].astype(jnp.float32)
        if c.restrict_ce_to_mask:
            student_BxMxV, soft_weights_BxN = student_BxNxV, weights_BxM
        else:  # the MLM term reads the same all-position logits at the masked slots
            student_BxMxV = jnp.take_along_axis(student_BxNxV, batch["masked_positions"][..., None],
                                                axis=1)
            soft_weights_BxN = mask_BxL
        mlm_sum, correct_sum = masked_xent_sums(student_BxMxV, batch["masked_labels"], weights_BxM)
        sums = {
            "soft_sum": soft_target_sum(student_BxNxV, teacher_BxNxV, soft_weights_BxN,
                                        c.temperature),
            "mlm_sum": mlm_sum,
            "correct_sum": correct_sum,
            "cosine_sum": (cosine_loss_sum(student_BxLxD, teacher_BxLxD, batch["attention_mask"])
                           if c.alpha_cos else jnp.zeros((), jnp.float32)),
            "weight_sum": jnp.sum(weights_BxM),
            "token_sum": jnp.sum(mask_BxL)
        }
        soft_count = normalizers["predictions" if c.restrict_ce_to_mask else "tokens"]
        loss = (c.alpha_ce * sums["soft_sum"] / soft_count +
                c.alpha_mlm * mlm_sum / normalizers["predictions"] +
                c.alpha_cos * sums["cosine_sum"] / normalizers["tokens"])
        return loss, sums

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        c = self.config
        slots, tokens = jnp.maximum(sums["weight_sum"], 1.0), jnp.maximum(sums["token_sum"], 1.0)
        soft_rows = slots if c.restrict_ce_to_mask else tokens
        terms = {
            "soft_ce": sums["soft_sum"] / soft_rows,
            "mlm_loss": sums["mlm_sum"] / slots,
            "cosine": sums["cosine_sum"] / tokens
        }
        loss = c.alpha_ce * terms["soft_ce"] + c.alpha_mlm * terms["mlm_loss"] + (c.alpha_cos *
                                                                                  terms["cosine"])
        return {
            "loss": loss,
            **terms, "accuracy": sums["correct_sum"] / slots,
            "masked_tokens": sums["weight_sum"]
        }

    # -- cost ----------------------------------------------------------------------------------
    def train_flops(self, config: ModelConfig, seq_len: int, counts: Mapping[str, float]) -> float:
        """The student's training FLOPs plus the teacher's forward: each body per real token, each
        MLM head per real row of the soft targets (real predictions with `restrict_ce_to_mask`,
        else real tokens: padded positions are computed but not counted)."""
        teacher = self.resolved_teacher(config)
        rows = counts["predictions" if self.config.restrict_ce_to_mask else "tokens"]
        d, v = teacher.hidden_size, teacher.vocab_size
        teacher_forward = (counts["tokens"] * teachers.forward_flops_per_token(teacher, seq_len) +
                           2.0 * (d * d + d * v) * rows)
        student = super().train_flops(config, seq_len, {**counts, "predictions": rows})
        return student + teacher_forward

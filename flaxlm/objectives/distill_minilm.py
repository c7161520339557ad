"""MiniLMv2 (arXiv 2012.15828): multi-head self-attention relation distillation.

The student's last layer mimics one teacher layer's query–query, key–key and value–value
relations. Each of Q, K, V (all attention heads concatenated, width H·K) is split into R relation
heads of width d_r = H·K / R, independent of either model's attention heads, so student and
teacher may differ in width, depth and number of heads; relation = softmax(A·Aᵀ / √d_r) over the
positions of the sequence. The loss is KL(teacher ‖ student) of each relation distribution,
averaged over relation heads and (real) query positions, summed over the three relations (the
paper's weights are 1). Padding takes no part: padded keys are outside every softmax and padded
queries outside the average. The paper has no other loss term.

The public re-implementation (bloomberg/minilmv2.bb, run.sh) distills with 48 relation heads;
that is the default here (third-party scripts use 48 for base-size and 64 for large teachers).
Base-size teachers are distilled from their last layer and large ones from an upper-middle one
(`teacher_layer`), as third-party scripts do; neither choice is checked against the paper's text
(docs/distillation.md, "MiniLMv2"). Relations are computed on the unmasked
text: the batches come from the MLM pipeline, and the masked slots are put back before the
forward passes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.encoder import Encoder
from flaxlm.models.heads import MaskedLMModel
from flaxlm.objectives import teacher as teachers
from flaxlm.run.protocol import Batch, InitRule, Sums

RELATIONS = ("qq", "kk", "vv")  # query–query, key–key, value–value, in Encoder.layer_qkv's order


@dataclasses.dataclass(frozen=True)
class MiniLMv2Config(teachers.TeacherConfig):
    """`objective.minilmv2.*` keys (the mask settings only size the batches' prediction slots:
    relations are computed on the unmasked text)."""

    teacher_layer: int = -1  # 0-based; negative counts from the last layer
    relation_heads: int = 48


def original_ids(batch: Batch) -> jax.Array:
    """`input_ids` with every real prediction slot given back its original token."""
    ids_BxL, positions_BxM = batch["input_ids"], batch["masked_positions"]
    rows_Bx1 = jnp.arange(ids_BxL.shape[0])[:, None]
    current_BxM = ids_BxL[rows_Bx1, positions_BxM]
    # Unused slots point at position 0 with weight 0: they write back what is there.
    restored_BxM = jnp.where(batch["masked_weights"] > 0, batch["masked_labels"], current_BxM)
    return ids_BxL.at[rows_Bx1, positions_BxM].set(restored_BxM)


def relation_log_probs(a_BxLxHxK: jax.Array, mask_BxL: jax.Array, relation_heads: int) -> jax.Array:
    """log softmax(A·Aᵀ / √d_r) per relation head: `log_rel_BxRxLxL` (fp32), padded keys out."""
    b, length = a_BxLxHxK.shape[:2]
    # Concatenate the attention heads, then split into relation heads.
    a_BxLxRxS = a_BxLxHxK.astype(jnp.float32).reshape(b, length, relation_heads, -1)
    scores_BxRxLxL = jnp.einsum("bqrs,bkrs->brqk", a_BxLxRxS, a_BxLxRxS)
    scores_BxRxLxL = scores_BxRxLxL / math.sqrt(a_BxLxRxS.shape[-1])
    bias_Bx1x1xL = jnp.where(mask_BxL[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
    return jax.nn.log_softmax(scores_BxRxLxL + bias_Bx1x1xL, axis=-1)


def relation_kl_sum(teacher_BxLxHxK: jax.Array, student_BxLxHxK: jax.Array, mask_BxL: jax.Array,
                    relation_heads: int) -> jax.Array:
    """Σ over rows, relation heads and real query positions of KL(teacher ‖ student)."""
    log_t_BxRxLxL = relation_log_probs(teacher_BxLxHxK, mask_BxL, relation_heads)
    log_s_BxRxLxL = relation_log_probs(student_BxLxHxK, mask_BxL, relation_heads)
    real_key_Bx1x1xL = mask_BxL[:, None, None, :] > 0
    kl_BxRxL = jnp.sum(
        jnp.where(real_key_Bx1x1xL,
                  jnp.exp(log_t_BxRxLxL) * (log_t_BxRxLxL - log_s_BxRxLxL), 0.0), axis=-1)
    return jnp.sum(kl_BxRxL * mask_BxL[:, None, :].astype(jnp.float32))


class MiniLMv2Model(MaskedLMModel):
    """The student (encoder + MLM head, exported as such) and the frozen `teacher`: an encoder cut
    after the distilled layer, since nothing above it is run."""
    def __init__(self, config: ModelConfig, teacher_config: ModelConfig, *, teacher_dtype,
                 rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        self.teacher = Encoder(teacher_config, rngs=rngs)
        if teacher_dtype != jnp.float32:
            teachers.cast_params(self.teacher, teacher_dtype)


class MiniLMv2(teachers.Distillation):
    name = "minilmv2"
    Config = MiniLMv2Config
    summary_keys = ("loss", "qq_kl", "kk_kl", "vv_kl")

    def __init__(self, config: MiniLMv2Config | None = None):
        super().__init__(config or MiniLMv2Config())
        if self.config.relation_heads <= 0:
            raise FlaxlmError(f"objective.minilmv2.relation_heads must be positive, got "
                              f"{self.config.relation_heads}")

    # -- model ---------------------------------------------------------------------------------
    def resolved_teacher(self, student: ModelConfig) -> ModelConfig:
        """The teacher as built: cut after the distilled layer, without a pooler."""
        full = self.full_teacher(student)
        try:
            layer = range(full.num_layers)[self.config.teacher_layer]
        except IndexError:
            raise FlaxlmError(f"objective.minilmv2.teacher_layer={self.config.teacher_layer} is "
                              f"not a layer of the {full.num_layers}-layer teacher") from None
        return teachers.without_pooler(full, layer + 1)

    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> MiniLMv2Model:
        teacher = self.resolved_teacher(config)
        r = self.config.relation_heads
        for who, c in (("student", config), ("teacher", teacher)):
            if (c.num_heads * c.dim_per_head) % r:
                raise FlaxlmError(
                    f"objective.minilmv2.relation_heads={r} does not divide the {who}'s "
                    f"query/key/value width {c.num_heads * c.dim_per_head}")
        self.check_vocabulary(config, teacher)
        return MiniLMv2Model(config, teacher, rngs=rngs,
                             teacher_dtype=self.teacher_dtype(jnp.float32))

    def lr_scales(self, config: ModelConfig, param_paths: list[str]) -> dict[str, float]:
        """0 for the student tensors the loss never reaches: the last layer past its Q/K/V
        projections, the MLM head and a pooler. AdamW's decoupled weight decay would otherwise
        shrink them every step (zero gradient, nonzero decay: a factor exp(-Σ lr·wd), 0.3 over
        the 400k steps of configs/minilmv2_l6_h384_from_xlmr.py); torch's AdamW skips a tensor
        whose grad is None, so upstream keeps them as initialized, and so does a zero scale here
        (it stops the whole update, weight decay included)."""
        last = f"encoder/layers/{config.num_layers - 1}/"
        qkv = tuple(f"{last}attention/{p}/" for p in ("query", "key", "value"))

        def reached(name: str) -> bool:
            if name.startswith(last):
                return name.startswith(qkv)
            return name.startswith("encoder/") and not name.startswith("encoder/pooler/")

        return {n: 0.0 for n in param_paths if not reached(n)}

    def init_rules(self, has_init_from: bool) -> tuple[InitRule, ...]:
        # The student starts fresh (or from init_from); the teacher from its workdir's encoder.
        return (*super().init_rules(has_init_from),
                InitRule("teacher", teachers.TEACHER_SOURCE, "encoder"))

    # -- loss ----------------------------------------------------------------------------------
    def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
        # Relation rows = relation heads × real query positions; the heads are a constant factor.
        return {"positions": jnp.maximum(jnp.sum(batch["attention_mask"].astype(jnp.float32)), 1.0)}

    def relation_sums(self, model: MiniLMv2Model, batch: Batch, *, dtype,
                      dropout_key: jax.Array | None) -> dict[str, jax.Array]:
        ids_BxL, mask_BxL = original_ids(batch), batch["attention_mask"]
        types_BxL = batch.get("token_type_ids")
        student_qkv = model.encoder.layer_qkv(ids_BxL, mask_BxL, types_BxL, layer=-1, dtype=dtype,
                                              dropout_key=dropout_key)
        teacher_qkv = jax.lax.stop_gradient(
            model.teacher.layer_qkv(teachers.to_teacher_ids(ids_BxL, self.student_to_teacher),
                                    mask_BxL, types_BxL, layer=-1, dtype=self.teacher_dtype(dtype)))
        r = self.config.relation_heads
        sums = {
            f"{name}_sum": relation_kl_sum(t, s, mask_BxL, r)
            for name, s, t in zip(RELATIONS, student_qkv, teacher_qkv)
        }
        sums["positions"] = jnp.sum(mask_BxL.astype(jnp.float32))
        return sums

    def loss(self, model: MiniLMv2Model, batch: Batch, normalizers: Mapping[str, jax.Array], *,
             dtype, dropout_key: jax.Array | None) -> tuple[jax.Array, Sums]:
        sums = self.relation_sums(model, batch, dtype=dtype, dropout_key=dropout_key)
        kl_sum = sum(sums[f"{name}_sum"] for name in RELATIONS)
        return kl_sum / (self.config.relation_heads * normalizers["positions"]), sums

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        rows = self.config.relation_heads * jnp.maximum(sums["positions"], 1.0)
        kls = {f"{name}_kl": sums[f"{name}_sum"] / rows for name in RELATIONS}
        return {"loss": sum(kls.values()), **kls, "positions": sums["positions"]}

    # -- cost ----------------------------------------------------------------------------------
    def train_flops(self, config: ModelConfig, seq_len: int, counts: Mapping[str, float]) -> float:
        """Student: forward + backward (×3) of its body up to its last layer's Q/K/V and of its
        relations; teacher: the forward of the same up to the distilled layer."""
        def forward_per_token(c: ModelConfig) -> float:
            below = dataclasses.replace(c, num_layers=c.num_layers - 1)
            inner = c.num_heads * c.dim_per_head
            qkv = 2.0 * 3 * (c.hidden_size * inner + inner)
            relations = 3 * 2.0 * seq_len * inner  # A·Aᵀ over all relation heads, three times
            return teachers.forward_flops_per_token(below, seq_len) + qkv + relations

        teacher = self.resolved_teacher(config)
        return counts["tokens"] * (3.0 * forward_per_token(config) + forward_per_token(teacher))

"""What the distillation objectives share about their frozen teacher.

The teacher is a sub-module named `teacher` of the model an objective builds: frozen (the
objective's `frozen` filter), loaded from a flaxlm workdir on every start (an init rule from the
weight source "teacher"; `flaxlm import` turns a Hugging Face checkpoint into such a workdir),
sharded by the same logical-axis rules as the student and run inside the same jitted step.

Its shapes come from that workdir's config.json; without a workdir (`flaxlm compile`, tests) from
a named preset sized to the student's vocabulary. A student whose vocabulary is a subset of the
teacher's (a pruned vocabulary) reads its batches with its own tokenizer: each student id is
mapped to the teacher id of the same token (`student_to_teacher_ids`) for the teacher's input, and
the teacher's vocabulary logits are gathered over those ids.

`Distillation` is what both objectives (MiniLMv2, DistilBERT) do with their teacher, in one place:
its keys (`TeacherConfig`), shapes, dtype, weight source and token map.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.flops import matmul_params
from flaxlm.models.config import ModelConfig, preset
from flaxlm.objectives.mlm import MaskedLM, MaskedLMConfig
from flaxlm.run.protocol import DataContext, DataPlan
from flaxlm.run.workdir import Workdir

TEACHER_SOURCE = "teacher"  # the weight source name init rules read the teacher from


def teacher_model_config(workdir: str, preset_name: str, student: ModelConfig,
                         key: str) -> ModelConfig:
    """The teacher's shapes: its workdir's config.json, else `preset_name` with the student's
    vocabulary (a teacher without weights only serves `flaxlm compile` and tests)."""
    if workdir:
        return Workdir.open(workdir).model
    if not preset_name:
        raise FlaxlmError(f"{key}.teacher and {key}.teacher_preset are both empty: set the "
                          "teacher's workdir (flaxlm import turns a Hugging Face checkpoint into "
                          "one)")
    return preset(preset_name, vocab_size=student.vocab_size, pad_token_id=student.pad_token_id)


def teacher_tokenizer_dir(workdir: str) -> str:
    return Workdir.open(workdir).tokenizer_dir


def teacher_head(workdir: str) -> str:
    """The head the teacher workdir's checkpoints carry ("mlm", "token_classification", ...)."""
    return Workdir.open(workdir).head


def _token_ids(tokenizer_dir: str) -> dict[str, int]:
    """Token string → id, as the directory's tokenizer.json (what transformers runs) has them."""
    path = os.path.join(tokenizer_dir, "tokenizer.json")
    try:
        with open(path, encoding="utf-8") as f:
            model = json.load(f)["model"]
        vocab = model["vocab"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FlaxlmError(f"{path}: cannot read its vocabulary ({e}); vocabulary-aware "
                          "distillation maps tokens between the two tokenizers by it") from None
    if isinstance(vocab, dict):  # WordPiece / BPE: {token: id}
        return dict(vocab)
    # Unigram: [[piece, score], ...] in id order.
    return {piece: i for i, (piece, _) in enumerate(vocab)}


def student_to_teacher_ids(student_tok, teacher_tok) -> np.ndarray | None:
    """int32 [student vocabulary]: the teacher id of each student token, or None when the two
    vocabularies are the same. Special tokens map by role (pad → pad, mask → mask, ...)."""
    student_ids, teacher_ids = _token_ids(student_tok.path), _token_ids(teacher_tok.path)
    if student_tok.kind != teacher_tok.kind:
        raise FlaxlmError(f"student tokenizer {student_tok.path} is {student_tok.kind} but the "
                          f"teacher's {teacher_tok.path} is {teacher_tok.kind}: tokens cannot be "
                          "mapped between them")
    if student_ids == teacher_ids and student_tok.vocab_size == teacher_tok.vocab_size:
        return None
    to_teacher = np.full(student_tok.vocab_size, -1, np.int64)
    for token, i in student_ids.items():
        if i < student_tok.vocab_size and token in teacher_ids:
            to_teacher[i] = teacher_ids[token]
    for role in ("pad_id", "cls_id", "sep_id", "mask_id", "unk_id"):
        to_teacher[getattr(student_tok, role)] = getattr(teacher_tok, role)
    missing = [
        t for t, i in student_ids.items() if i < student_tok.vocab_size and to_teacher[i] < 0
    ]
    if missing or np.any(to_teacher < 0):
        raise FlaxlmError(
            f"{len(missing) or int(np.sum(to_teacher < 0))} tokens of the student tokenizer "
            f"{student_tok.path} are not in the teacher's {teacher_tok.path} (e.g. "
            f"{missing[:5]}); the student's vocabulary must be a subset of the teacher's")
    if np.any(to_teacher >= teacher_tok.vocab_size):
        raise FlaxlmError(f"{teacher_tok.path}: tokenizer.json holds ids beyond its vocabulary "
                          f"size {teacher_tok.vocab_size}")
    return to_teacher.astype(np.int32)


def to_teacher_ids(ids_BxL: jax.Array, student_to_teacher: np.ndarray | None) -> jax.Array:
    if student_to_teacher is None:
        return ids_BxL
    return jnp.take(jnp.asarray(student_to_teacher), ids_BxL, axis=0)


def cast_params(module: nnx.Module, dtype) -> None:
    """Store a (frozen) module's parameters in `dtype`: a bf16 teacher takes half the memory."""
    state = nnx.state(module, nnx.Param)
    nnx.update(module, jax.tree.map(lambda x: x.astype(dtype), state))


def without_pooler(config: ModelConfig, num_layers: int | None = None) -> ModelConfig:
    """The teacher's shapes with only what distillation runs (no pooler; optionally fewer
    layers), so nothing unused is loaded, sharded or held in memory."""
    return dataclasses.replace(config, pooler=False, hidden_dropout=0.0, attention_dropout=0.0,
                               num_layers=num_layers or config.num_layers)


def forward_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Forward FLOPs of `config`'s body per token (the convention of flaxlm.flops)."""
    inner = config.num_heads * config.dim_per_head
    return 2.0 * matmul_params(config) + 4.0 * config.num_layers * seq_len * inner


@dataclasses.dataclass(frozen=True)
class TeacherConfig(MaskedLMConfig):
    """The keys every distillation objective has (`objective.<name>.teacher`, ...)."""

    teacher: str = ""  # the teacher's flaxlm workdir (flaxlm import makes one from HF)
    teacher_preset: str = ""  # the teacher's shapes when `teacher` is empty (flaxlm compile)
    # Hold the teacher's weights in bf16 and run its forward in bf16 (else: the run's dtype).
    teacher_bf16: bool = False


class Distillation(MaskedLM):
    """An MLM-batch objective whose model carries a frozen sub-module `teacher`: where its shapes
    and weights come from, its dtype, and the token map of a pruned student vocabulary."""

    head = "mlm"
    frozen = nnx.PathContains("teacher")
    # Said at start when the student's vocabulary is mapped onto the teacher's.
    vocabulary_note = " for the teacher's input"

    def __init__(self, config: TeacherConfig):
        self.config = config
        self.config.validate(self.section)
        if config.pack_predictions:  # a MaskedLMConfig key this objective's own loss ignores
            raise FlaxlmError(f"{self.section}.pack_predictions: prediction packing is built for "
                              "objective.mlm only; distillation computes its own heads")
        # The teacher's shapes (from its workdir or preset, on first use; tests may set them) and
        # the student → teacher token map of a pruned student vocabulary (set by plan_data).
        self.teacher_config: ModelConfig | None = None
        self.student_to_teacher: np.ndarray | None = None

    @property
    def section(self) -> str:
        """Where the user sets this objective's keys."""
        return f"objective.{self.name}"

    def full_teacher(self, student: ModelConfig) -> ModelConfig:
        """The teacher's shapes as its workdir (or preset) has them."""
        if self.teacher_config is None:
            self.teacher_config = teacher_model_config(self.config.teacher,
                                                       self.config.teacher_preset, student,
                                                       self.section)
        return self.teacher_config

    def check_vocabulary(self, student: ModelConfig, teacher: ModelConfig) -> None:
        if self.student_to_teacher is None and teacher.vocab_size != student.vocab_size:
            raise FlaxlmError(f"the teacher's vocabulary ({teacher.vocab_size}) differs from the "
                              f"student's ({student.vocab_size}) and no token map was built")

    def teacher_dtype(self, run_dtype):
        """bf16 with `teacher_bf16`, else `run_dtype`: float32 for the weights it holds, the
        run's compute dtype for its forward."""
        return jnp.bfloat16 if self.config.teacher_bf16 else run_dtype

    def weight_sources(self) -> dict[str, str]:
        if not self.config.teacher:
            raise FlaxlmError(f"{self.section}.teacher is empty: training needs the teacher's "
                              "workdir (flaxlm import makes one from a Hugging Face checkpoint)")
        return {TEACHER_SOURCE: self.config.teacher}

    def plan_data(self, ctx: DataContext) -> DataPlan:
        plan = super().plan_data(ctx)  # the MLM data's (data.host_reading)
        if not self.config.teacher:
            return plan
        self.student_to_teacher = student_to_teacher_ids(
            ctx.tokenizer, load_tokenizer(teacher_tokenizer_dir(self.config.teacher)))
        if self.student_to_teacher is None:
            return plan
        return dataclasses.replace(
            plan, notes=(*plan.notes,
                         f"student vocabulary ({ctx.tokenizer.vocab_size} tokens) mapped onto "
                         f"the teacher's{self.vocabulary_note}"))

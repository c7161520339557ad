"""Training objectives the step benchmark knows: one entry per objective adds its table rows.

An entry says how to build the flaxlm objective, how to make a synthetic in-memory batch with the
shapes the real pipeline produces, and which reference implementations it is compared against.
flaxlm is imported lazily so the coordinator (and the HF Flax virtualenv) never need it.

To add an objective: write `make_<name>` returning `(objective, batch_fn)` and register it with
its baselines (and the runners' `objective` branch, benchmarks/runners/); every vocabulary in the
profile then gets a row, or, outside the smoke profile, the objective's own `sized_vocabs` and
`sized_spec` shapes (ELECTRA runs at SELECTRA-small's).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from benchmarks.common import expected_predictions, max_predictions
from benchmarks.model_specs import model_config


@dataclasses.dataclass(frozen=True)
class StepObjective:
    name: str
    make: Callable[[dict], tuple]  # spec -> (flaxlm objective, batch_fn(rng) -> numpy batch)
    # Worker kinds from `benchmarks.worker.RUNNERS`; none: no `step.<name>` case is generated and
    # another case runs the objective (the `distill` case in cases.py).
    baselines: tuple[str, ...]
    description: str
    spec: dict = dataclasses.field(default_factory=dict)  # extra spec entries for every worker
    # {vocab: {baseline: minimum flaxlm speed-up}}, checked outside the smoke profile.
    speed_goals: dict = dataclasses.field(default_factory=dict)
    mfu_goal: float | None = 0.6  # flaxlm's MFU against the measured matmul peak
    # The objective's own shapes outside the smoke profile (e.g. ELECTRA at SELECTRA-small):
    # spec entries replacing the profile's ("model", "warmup"), and the vocabularies of its rows.
    sized_spec: dict = dataclasses.field(default_factory=dict)
    sized_vocabs: tuple[int, ...] = ()
    in_smoke: bool = True  # False: no row in the smoke profile (keeps CI's smoke run short)

    def vocabs(self, profile) -> tuple[int, ...]:
        if profile.name == "smoke":
            return profile.vocabs if self.in_smoke else ()
        return self.sized_vocabs or profile.vocabs

    def shapes(self, profile) -> dict:
        """The spec entries that replace the profile's shapes for this objective's rows."""
        return {} if profile.name == "smoke" else self.sized_spec

    def worker_spec(self, profile) -> dict:
        return dict(self.spec, **self.shapes(profile))


def mlm_batch(rng: np.random.Generator, *, batch: int, seq: int, vocab: int, cls_id: int = 0,
              sep_id: int = 2, first_regular: int = 5, slots: int = 0) -> dict:
    """A packed MLM batch in flaxlm's layout (docs/architecture.md), plus HF-style `labels`.

    Rows are full (packed, no padding); each row has `expected_predictions(seq)` real predictions
    in `max_predictions(seq)` slots (or `slots`), as whole-word masking yields on average.
    """
    real = expected_predictions(seq)
    m = max(slots, real) if slots else max_predictions(seq)
    ids = rng.integers(first_regular, vocab, (batch, seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = cls_id, sep_id
    positions = np.zeros((batch, m), np.int32)
    for b in range(batch):
        positions[b, :real] = np.sort(rng.choice(np.arange(1, seq - 1), real, replace=False))
    weights = np.zeros((batch, m), np.float32)
    weights[:, :real] = 1.0
    labels_at = np.take_along_axis(ids, positions, axis=1) * (weights > 0)
    input_ids = ids.copy()
    np.put_along_axis(input_ids, positions[:, :real], vocab - 1, axis=1)  # stand-in mask id
    labels = np.full((batch, seq), -100, np.int64)
    np.put_along_axis(labels, positions[:, :real], ids[np.arange(batch)[:, None],
                                                       positions[:, :real]], axis=1)
    return {
        "input_ids": input_ids,
        "attention_mask": np.ones((batch, seq), np.int32),
        "token_type_ids": np.zeros((batch, seq), np.int32),
        "masked_positions": positions,
        "masked_labels": labels_at.astype(np.int32),
        "masked_weights": weights,
        "labels": labels,  # HF: -100 everywhere except the masked tokens
    }


FLAXLM_KEYS = ("input_ids", "attention_mask", "token_type_ids", "masked_positions", "masked_labels",
               "masked_weights")


def _mlm_batch_fn(spec: dict):
    def batch_fn(rng):
        b = mlm_batch(rng, batch=spec["batch"], seq=spec["seq"], vocab=spec["vocab"],
                      slots=spec.get("predictions", 0))
        return {k: b[k] for k in FLAXLM_KEYS}

    return batch_fn


def _make_mlm(spec: dict):
    from flaxlm.objectives.mlm import MaskedLM, MaskedLMConfig
    config = MaskedLMConfig(pack_predictions=spec.get("pack_predictions", False))
    return MaskedLM(config), _mlm_batch_fn(spec)


def _make_distilbert(spec: dict):
    """DistilBERT distillation of the profile's model from a frozen teacher of its width at twice
    its depth (DistilBERT's 12 → 6 layers); the student starts fresh: timing needs no weights."""
    from flaxlm.objectives.distill_bert import DistilBert, DistilBertConfig

    objective = DistilBert(DistilBertConfig(teacher_layers=""))
    student = model_config(spec)
    objective.teacher_config = dataclasses.replace(student, num_layers=2 * student.num_layers)
    return objective, _mlm_batch_fn(spec)


OBJECTIVES: dict[str, StepObjective] = {}


def register(objective: StepObjective) -> None:
    OBJECTIVES[objective.name] = objective


def token_batch(rng: np.random.Generator, *, batch: int, seq: int, vocab: int, num_labels: int = 9,
                cls_id: int = 0, sep_id: int = 2, pad_id: int = 0, first_regular: int = 5,
                first_sub_token_rate: float = 0.7) -> dict:
    """A token-classification batch as fine-tuning cuts it to a length bucket: the longest row
    fills the bucket, the others hold between half of it and all of it (then padding); a label on
    `first_sub_token_rate` of the real tokens (the first sub-token of each word), none on CLS,
    SEP, continuation sub-tokens or padding. flaxlm's keys plus HF's `hf_labels` (-100 where
    unlabelled); `num_labels` 9 is CoNLL-2002's IOB2 set."""
    lengths_B = rng.integers(seq // 2, seq + 1, batch)
    lengths_B[0] = seq
    real_BxL = np.arange(seq) < lengths_B[:, None]
    ids = np.where(real_BxL, rng.integers(first_regular, vocab, (batch, seq)), pad_id)
    ids[:, 0] = cls_id
    ids[np.arange(batch), lengths_B - 1] = sep_id
    inner_BxL = real_BxL & (np.arange(seq) > 0) & (np.arange(seq) < lengths_B[:, None] - 1)
    weights = (inner_BxL & (rng.random((batch, seq)) < first_sub_token_rate)).astype(np.float32)
    labels = rng.integers(0, num_labels, (batch, seq)) * (weights > 0)
    return {
        "input_ids": ids.astype(np.int32),
        "attention_mask": real_BxL.astype(np.int32),
        "token_type_ids": np.zeros((batch, seq), np.int32),
        "labels": labels.astype(np.int32),
        "label_weights": weights,
        "word_index": np.where(weights > 0,
                               np.cumsum(weights, axis=1) - 1, -1).astype(np.int32),
        "sentence": np.arange(batch, dtype=np.int32),
        "hf_labels": np.where(weights > 0, labels, -100).astype(np.int64),
    }


TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "label_weights",
              "word_index", "sentence")


def _make_token_classification(spec: dict):
    from flaxlm.objectives.token_classification import TokenClassification

    def batch_fn(rng):
        b = token_batch(rng, batch=spec["batch"], seq=spec["seq"], vocab=spec["vocab"],
                        num_labels=spec["num_labels"])
        return {k: b[k] for k in TOKEN_KEYS}

    return TokenClassification(), batch_fn


register(
    StepObjective(
        name="mlm",
        make=_make_mlm,
        baselines=("flaxlm-step-unpacked", "hf-torch-eager", "hf-torch-compile", "hf-flax"),
        description="masked LM, whole-word masking shapes, logits at masked positions only",
        # flaxlm packs the batch's real predictions for the vocabulary head (objective.mlm.
        # pack_predictions); the flaxlm-step-unpacked row is the same step over every slot.
        spec={"pack_predictions": True},
        speed_goals={
            30_522: {
                "hf-flax": 2.0,
                "hf-torch-eager": 4.0
            },
            250_002: {
                "hf-flax": 6.0,
                "hf-torch-eager": 6.0
            }
        }))

register(
    StepObjective(
        name="token_classification",
        make=_make_token_classification,
        baselines=("hf-torch-eager", "hf-torch-compile"),
        description="token classification (NER fine-tuning: 9 labels, rows of a length bucket)",
        spec={"num_labels": 9},
        # Fine-tuning's done-when: flaxlm faster than a plain PyTorch loop; no MFU target (a
        # 9-label head leaves the step to the body, as in MLM; the target stays MLM's).
        speed_goals={
            30_522: {
                "hf-torch-eager": 1.0
            },
            250_002: {
                "hf-torch-eager": 1.0
            }
        },
        mfu_goal=None))

register(
    StepObjective(
        name="distilbert", make=_make_distilbert, baselines=(),
        description="DistilBERT distillation: the student's MLM step plus a frozen teacher's forward "
        "(the student's width, twice its depth), soft targets and hidden-state cosine",
        mfu_goal=None))


def _make_electra(spec: dict):
    from flaxlm.objectives.electra import Electra, ElectraConfig

    def batch_fn(rng):
        b = mlm_batch(rng, batch=spec["batch"], seq=spec["seq"], vocab=spec["vocab"],
                      slots=spec.get("predictions", 0))
        return {k: b[k] for k in FLAXLM_KEYS}

    # The SELECTRA recipe's objective: generator 1/4 of the discriminator's width, temperature 1,
    # loss = generator + 50 × discriminator.
    objective = Electra(ElectraConfig(generator_hidden_fraction=spec["generator_hidden_fraction"]))
    return objective, batch_fn


# SELECTRA small's discriminator (configs/selectra_small.py, preset selectra-small); the
# generator (12 × 64, 1 head, FFN 256) is derived from it on both sides.
SELECTRA_SMALL = dict(hidden=256, layers=12, heads=4, ffn=1024, embedding=256)

register(
    StepObjective(
        name="electra",
        make=_make_electra,
        baselines=("hf-torch-eager", ),
        description="ELECTRA pre-training (generator + 50 × discriminator, SELECTRA-small shapes)",
        spec={"generator_hidden_fraction": 0.25},
        sized_spec={
            "model": SELECTRA_SMALL,
            "warmup": 3
        },
        sized_vocabs=(50_000, ),
        # Two towers to compile would lengthen tests/test_benchmarks.py's smoke run; the torch pair is
        # checked on its own there (test_electra_torch_baseline_shares_embeddings).
        in_smoke=False,
        # Issue 15 asks for the comparison, with no speed or MFU goal.
        mfu_goal=None))

"""Training objectives the step benchmark knows: one entry per objective adds its table rows.

An entry says how to build the flaxlm objective, how to make a synthetic in-memory batch with the
shapes the real pipeline produces, and which reference implementations it is compared against.
flaxlm is imported lazily so the coordinator (and the HF Flax virtualenv) never need it.

To add an objective (e.g. ELECTRA): write `make_<name>` returning `(objective, batch_fn)` and
register it with its baselines; every vocabulary in the profile then gets a row.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from benchmarks.common import expected_predictions, max_predictions


@dataclasses.dataclass(frozen=True)
class StepObjective:
    name: str
    make: Callable[[dict], tuple]  # spec -> (flaxlm objective, batch_fn(rng) -> numpy batch)
    baselines: tuple[str, ...]  # worker kinds from `benchmarks.worker.RUNNERS`
    description: str


def mlm_batch(rng: np.random.Generator, *, batch: int, seq: int, vocab: int,
              cls_id: int = 0, sep_id: int = 2, first_regular: int = 5,
              slots: int = 0) -> dict:
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


FLAXLM_KEYS = ("input_ids", "attention_mask", "token_type_ids", "masked_positions",
               "masked_labels", "masked_weights")


def _make_mlm(spec: dict):
    from flaxlm.objectives.mlm import MaskedLM

    def batch_fn(rng):
        b = mlm_batch(rng, batch=spec["batch"], seq=spec["seq"], vocab=spec["vocab"],
                      slots=spec.get("predictions", 0))
        return {k: b[k] for k in FLAXLM_KEYS}
    return MaskedLM(), batch_fn


OBJECTIVES: dict[str, StepObjective] = {}


def register(objective: StepObjective) -> None:
    OBJECTIVES[objective.name] = objective


register(StepObjective(
    name="mlm", make=_make_mlm,
    baselines=("hf-torch-eager", "hf-torch-compile", "hf-flax"),
    description="masked LM, whole-word masking shapes, logits at masked positions only"))

"""Small students, teachers and MLM batches for the distillation tests."""

import dataclasses

import jax
import numpy as np

from flaxlm.models.config import preset
from flaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer
from flaxlm.run.steps import StepConfig, TrainProgram
from flaxlm.sharding import MeshConfig, make_mesh

VOCAB, LENGTH, SLOTS = 96, 16, 4
# A student narrower and shallower than its teacher, with other head counts.
STUDENT = preset("tiny", vocab_size=VOCAB, hidden_size=32, num_heads=2, intermediate_size=64,
                 hidden_dropout=0.0, attention_dropout=0.0)
TEACHER = preset("tiny", vocab_size=VOCAB, hidden_size=48, num_layers=3, num_heads=3,
                 intermediate_size=96)


def mlm_batch(rng: np.random.Generator, rows: int, vocab: int = VOCAB, pad_id: int = 1) -> dict:
    """Rows of different real lengths (padding at the end) with a few masked slots each."""
    lengths_B = rng.integers(5, LENGTH + 1, rows)
    mask_BxL = np.arange(LENGTH) < lengths_B[:, None]
    ids_BxL = np.where(mask_BxL, rng.integers(5, vocab, (rows, LENGTH)), pad_id)
    positions_BxM = np.stack([rng.choice(np.arange(1, n), SLOTS, replace=False)
                              for n in lengths_B]).astype(np.int32)
    weights_BxM = (rng.random((rows, SLOTS)) < 0.8).astype(np.float32)
    positions_BxM = np.where(weights_BxM > 0, positions_BxM, 0)
    labels_BxM = np.take_along_axis(ids_BxL, positions_BxM, axis=1)
    masked_BxL = ids_BxL.copy()
    for b in range(rows):
        masked_BxL[b, positions_BxM[b][weights_BxM[b] > 0]] = 4  # the mask id of these tests
    return {
        "input_ids": masked_BxL.astype(np.int32),
        "attention_mask": mask_BxL.astype(np.int32),
        "token_type_ids": np.zeros_like(masked_BxL, dtype=np.int32),
        "masked_positions": positions_BxM,
        "masked_labels": labels_BxM.astype(np.int32),
        "masked_weights": weights_BxM
    }


def program(objective, config=STUDENT, devices=2, accum=1, learning_rate=1e-3):
    optim = OptimConfig(learning_rate=learning_rate, warmup_steps=0, total_steps=1000)
    mesh = make_mesh(MeshConfig(devices, 1, 1), jax.devices()[:devices])
    return TrainProgram(objective, config, make_optimizer(optim), learning_rate_schedule(optim),
                        mesh, StepConfig(grad_accum_steps=accum))


def key(seed=0):
    return jax.random.key_data(jax.random.key(seed))


def with_teacher(objective, teacher=TEACHER):
    objective.teacher_config = dataclasses.replace(teacher)
    return objective

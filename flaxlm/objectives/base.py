"""What a training objective provides to the one trainer.

MLM, ELECTRA and distillation differ only in the model they build, the loss they compute from a
batch, and how many FLOPs an example costs; the trainer, sharding, checkpoints and logging are
shared. An objective's `loss` returns *sums* over the batch so gradient accumulation can add
micro-batches and normalize once, which makes accumulation exactly equal to one big batch.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import jax
from flax import nnx

from flaxlm.models.config import ModelConfig

Sums = Mapping[str, jax.Array]


class Objective(Protocol):
    name: str

    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
        ...

    def loss_sums(self, model: nnx.Module, batch: Mapping[str, jax.Array], *, dtype,
                  dropout_key: jax.Array | None) -> Sums:
        """Must contain `loss_sum` (differentiated) and `weight_sum` (its normalizer)."""
        ...

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        """Per-step metrics (at least `loss`) from the summed statistics of a whole batch."""
        ...

    def train_flops_per_example(self, config: ModelConfig, seq_len: int,
                                predictions_per_example: int) -> float:
        ...

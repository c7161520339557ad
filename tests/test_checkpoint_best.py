"""The best checkpoint orbax keeps is the one best.json names: of equal values, the earliest."""

import os

import jax.numpy as jnp
import pytest

from flaxlm.run.checkpoint import Checkpointer


@pytest.mark.parametrize("mode, values", [("max", (0.25, 0.5, 0.5, 0.375)),
                                          ("min", (0.5, 0.25, 0.25, 0.375))])
def test_a_tie_keeps_the_earliest_best_checkpoint(tmp_path, mode, values):
    state = {"params": {"w": jnp.ones(2)}, "step": jnp.array(0)}
    checkpointer = Checkpointer(str(tmp_path), keep=1, async_save=False, best_mode=mode)
    for step, value in enumerate(values, 1):
        checkpointer.save(step, state, {"step": step}, value)
    checkpointer.close()
    # Step 2 first reached the best value (train.py's best.json names it); step 4 is the newest.
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]

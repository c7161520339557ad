"""How long `Checkpointer.save` (async orbax) holds up the train loop, and what the background
write costs the steps that overlap it."""

from __future__ import annotations

import shutil
import tempfile
import time

import numpy as np

from benchmarks.runners.flaxlm_step import program_for


class CheckpointCost:
    def __init__(self, spec: dict):
        import jax

        from flaxlm.run.checkpoint import Checkpointer
        from flaxlm.sharding import host_batch_to_global

        self.program, mesh, _, batch_fn = program_for(spec)
        self.batch = host_batch_to_global(mesh, batch_fn(np.random.default_rng(0)))
        self.state = self.program.init_state(jax.random.key_data(jax.random.key(0)))
        self.workdir = tempfile.mkdtemp(prefix="flaxlm-bench-ckpt-")
        self.ckpt = Checkpointer(self.workdir, keep=2, async_save=True)
        self.step_count = 0
        for _ in range(max(1, spec["warmup"])):
            self._step()
        self.state_bytes = sum(x.nbytes for x in jax.tree.leaves(self.state))
        # A run pays orbax's first-save set-up (threads, directories, handlers) once, not per
        # checkpoint: measured here, outside the rounds.
        t = time.perf_counter()
        self.ckpt.save(self.step_count, self.state, {"step": self.step_count})
        first_save = time.perf_counter() - t
        self.ckpt.wait()
        self.info = {
            "state_bytes": self.state_bytes,
            "first_save_blocking_s": first_save,
            "leaves": len(jax.tree.leaves(self.state))
        }

    def _step(self) -> float:
        t = time.perf_counter()
        self.state, metrics = self.program.train_step(self.state, self.batch)
        metrics["loss"].block_until_ready()
        self.step_count += 1
        return time.perf_counter() - t

    def run(self, steps_before: int = 3, max_steps_after: int = 8) -> dict:
        """Plain steps, then one save, then steps until the background write has finished."""
        before = [self._step() for _ in range(steps_before)]
        t = time.perf_counter()
        self.ckpt.save(self.step_count, self.state, {"step": self.step_count})
        blocking = time.perf_counter() - t
        after = []
        while self.ckpt.in_progress() and len(after) < max_steps_after:
            after.append(self._step())
        t = time.perf_counter()
        self.ckpt.wait()
        final_wait = time.perf_counter() - t
        return {
            "before": before,
            "blocking_s": blocking,
            "after": after,
            "final_wait_s": final_wait
        }

    def close(self) -> None:
        self.ckpt.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def build(spec: dict) -> CheckpointCost:
    return CheckpointCost(spec)

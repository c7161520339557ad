"""Orbax checkpoints under `<workdir>/checkpoints/<step>/`.

Each step directory holds three items:
  params  the model weights alone, so `init_from` and export read them without optimizer state
  train   optimizer state, step, RNG and skipped-update count
  meta    JSON: data-stream position, resolved model config, tokenizer path, final metrics
Orbax writes into a temporary directory and renames it when complete, so a run killed mid-save
leaves the previous checkpoint as the latest complete one; keep-last-N deletion happens only after
a newer save has finished.

In a single-process run, saving does not block the loop on the host transfer: `save` dispatches an
on-device copy of the state (an asynchronous program, so the next step can donate the original
buffers while the copy is read) and hands the copy to orbax on a worker thread, where orbax's own
blocking part (device→host transfer) runs. The copy costs one extra train state of device memory
until the transfer is done; `copy_on_device=False` (config `train.checkpoint_copy_on_device`)
restores orbax's behaviour of transferring in the loop, for models that fill the device.
Multi-process runs always transfer in the loop (see `Checkpointer.__init__`).
"""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from flaxlm.errors import FlaxlmError


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
                 copy_on_device: bool = True):
        self.directory = checkpoint_dir(workdir)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True))
        # Multi-process saves stay on the calling thread: orbax's save synchronizes the processes,
        # and from a worker thread that raced the next step's collectives (2 processes × 2 CPU
        # devices with gloo hung at the first save).
        self.copy_on_device = copy_on_device and async_save and jax.process_count() == 1
        # One worker, so saves reach orbax in step order.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, "flaxlm-checkpoint")
        self._started: concurrent.futures.Future | None = None
        self._copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))

    def latest_step(self) -> int | None:
        self._join_started()
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        self._join_started()
        return list(self.manager.all_steps())

    def save(self, step: int, state: dict, meta: dict) -> None:
        """Starts an async save of `state` at `step` and returns without waiting for the device.

        An error of the previous save is raised here (or by `wait`/`close`), never lost.
        """
        self._join_started()
        if not self.copy_on_device:
            self._save_now(step, state, meta)
            return
        snapshot = self._copy(state)
        self._started = self._worker.submit(self._save_now, step, snapshot, meta)

    def in_progress(self) -> bool:
        """Whether a save is still being copied, transferred or written."""
        started = self._started
        return (started is not None and not started.done()) or \
            self.manager.is_saving_in_progress()

    def _save_now(self, step: int, state: dict, meta: dict) -> None:
        train = {k: v for k, v in state.items() if k != "params"}
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(state["params"]),
            train=ocp.args.StandardSave(train),
            meta=ocp.args.JsonSave(meta)), force=True)

    def _join_started(self) -> None:
        """Waits until the last save has been handed to orbax; raises its error if it failed."""
        started, self._started = self._started, None
        if started is not None:
            started.result()

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
        """Full state placed with the shardings carried by `abstract_state`'s leaves."""
        train_abstract = {k: v for k, v in abstract_state.items() if k != "params"}
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state["params"]),
            train=ocp.args.StandardRestore(train_abstract),
            meta=ocp.args.JsonRestore()))
        return {"params": restored["params"], **restored["train"]}, dict(restored["meta"])

    def restore_latest_intact(self, abstract_state: dict) -> tuple[dict, dict, int] | None:
        latest = self.latest_step()
        if latest is None:
            return None
        state, meta = self.restore(latest, abstract_state)
        return state, meta, latest

    def wait(self) -> None:
        self._join_started()
        self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._worker.shutdown(wait=True)
            self.manager.close()


def read_params(workdir: str, abstract_params: Any | None = None,
                step: int | None = None) -> tuple[Any, dict, int]:
    """Weights and metadata of a workdir's checkpoint (latest unless `step`), without optimizer."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise FlaxlmError(f"{workdir}: no checkpoints/ directory (is this a flaxlm workdir?)")
    manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers={"params": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})
    try:
        available = list(manager.all_steps())
        if not available:
            raise FlaxlmError(f"{directory}: no complete checkpoint")
        if step is None:
            step = max(available)
        elif step not in available:
            raise FlaxlmError(f"{directory}: no checkpoint at step {step} (have {available})")
        if abstract_params is None:
            abstract_params = manager.item_metadata(step)["params"]
        # Leaves without a sharding go to this process's first device: the checkpoint's own
        # shardings name the devices of the run that wrote it (e.g. another process's devices
        # after multi-host training), which this process may not have.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract_params = jax.tree.map(
            lambda x: x if isinstance(getattr(x, "sharding", None), jax.sharding.Sharding)
            else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract_params)
        params_args = ocp.args.StandardRestore(abstract_params)
        restored = manager.restore(step, args=ocp.args.Composite(
            params=params_args, meta=ocp.args.JsonRestore()))
        return restored["params"], dict(restored["meta"]), step
    finally:
        manager.close()


def write_params(workdir: str, step: int, params: Any, meta: dict) -> None:
    """A params-only checkpoint (what `flaxlm import` writes): enough for init_from and export."""
    manager = ocp.CheckpointManager(checkpoint_dir(workdir),
                                    options=ocp.CheckpointManagerOptions(create=True))
    manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
    manager.close()
    jax.effects_barrier()

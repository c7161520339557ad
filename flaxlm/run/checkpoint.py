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

A checkpoint that cannot be read (a truncated or missing file, an undecodable chunk), or that
reads back other values than were saved (checked against the per-array fingerprints recorded in
`meta` at save time, `checkpoint_integrity.py`) or holds NaN/Inf, is reported in one line and
skipped for the newest intact one (see `checkpoint_damage.py`); a checkpoint whose state tree
differs from the run's is a settings change, not damage, and stops with the path named.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from etils import epath

from flaxlm.run.checkpoint_damage import (UNREADABLE_SUFFIX, DamageFound, Unreadable, check_tree,
                                          failed_processes, nothing_intact, quiet_orbax,
                                          read_failure, set_aside, set_aside_names, tree_shapes)
from flaxlm import storage
from flaxlm.run import checkpoint_integrity, run_log
from flaxlm.run.workdir import OWN_TOKENIZER, Workdir
from flaxlm.errors import CheckpointWriteError, FlaxlmError


def _report(line: str) -> None:
    if jax.process_index() == 0:
        print(line, file=sys.stderr, flush=True)


_told_unverified: set[tuple[str, int]] = set()


def _verified(tree: Any, meta: dict, step: int, directory: str) -> dict:
    """`meta` without its fingerprints, once the arrays of `tree` (as read back from checkpoint
    `step`) match them and hold no NaN/Inf; raises DamageFound otherwise. A checkpoint written
    before fingerprints were recorded is said, once per process, to be unverifiable."""
    meta = dict(meta)
    recorded = meta.pop(checkpoint_integrity.META_KEY, None)
    damage, compared = checkpoint_integrity.find_damage(tree, recorded, step=step,
                                                        step_dir=f"checkpoints/{step}")
    if damage is not None:
        raise DamageFound(damage)
    if not compared and (directory, step) not in _told_unverified:
        _told_unverified.add((directory, step))
        _report(f"flaxlm: checkpoint {step} has no recorded checksums (written before flaxlm "
                "recorded them): its values cannot be verified, only checked to be finite")
    return meta


def _newest_intact(
        steps: list[int], read: Callable[[int],
                                         Any], workdir: str, *, set_aside_in: str | None = None
) -> tuple[tuple[Any, int] | None, list[Unreadable], list[str]]:
    """Tries `read(step)` newest first; returns ((result, step) or None, the unreadable ones, the
    names they were renamed to).

    A FlaxlmError from `read` (a settings change, not damage) propagates. With `set_aside_in`,
    each unreadable step directory is renamed aside there so orbax stops listing it; only
    process 0 renames, and `failed_processes` is the barrier after which every process sees it.
    """
    steps = sorted(steps, reverse=True)
    found: list[Unreadable] = []
    moved: list[str] = []
    for i, step in enumerate(steps):
        failure = None
        try:
            with quiet_orbax():
                result = read(step)
        except FlaxlmError:
            raise
        except Exception as e:  # damage, unless read_failure re-raises it
            failure = read_failure(e, step, workdir)
        failed_on = failed_processes(failure is not None)
        if not failed_on:
            return (result, step), found, moved
        found.append(failure or Unreadable(step, os.path.join("checkpoints", str(step)),
                                           f"read failed on process(es) {failed_on}"))
        action = ""
        if set_aside_in is not None:
            name, error = None, None
            if jax.process_index() == 0:
                try:
                    name = set_aside(set_aside_in, step)
                except FlaxlmError as e:
                    error = e
            if failed_processes(error is not None):
                raise error or FlaxlmError(f"process 0 could not move checkpoint {step} aside")
            # Process 0 chose the name (an older `.unreadable` may exist); others report the usual.
            moved.append(name or f"{step}{UNREADABLE_SUFFIX}")
            action = f"; moved to checkpoints/{name}"
        if i + 1 < len(steps):
            _report(f"flaxlm: checkpoint {step} is {found[-1].kind} ({found[-1]}){action}, "
                    f"trying {steps[i + 1]}")
    return None, found, moved


def _cause(exc: BaseException) -> str:
    """The first line of the innermost exception: what the storage said."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    line = line if len(line) <= 300 else line[:299] + "…"
    return f"{type(exc).__name__}: {line}"


def _written_by_import(step_dir: str) -> bool:
    try:
        return json.loads(storage.read_text(os.path.join(step_dir, "meta",
                                                         "metadata"))).get("source") == "hf-import"
    except (OSError, ValueError, AttributeError):
        return False


class Checkpointer:
    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
                 copy_on_device: bool = True, best_mode: str | None = None):
        """`best_mode` ("max"/"min"): besides the newest `keep`, the checkpoint whose saved
        `selection` metric is best is never deleted (the objective's best-checkpoint choice)."""
        self.workdir = workdir
        self._in_orbax: int | None = None  # the step orbax may still be writing
        self._failed: FlaxlmError | None = None
        self.directory = Workdir(workdir).checkpoints_dir
        keep_policy = ocp.checkpoint_managers.LatestN(n=keep)
        if best_mode is not None:
            # Of equal values the earliest step is best, as best.json counts it (train.py); orbax
            # alone keeps the latest of a tie, which deleted the step best.json names.
            sign = -1 if best_mode == "max" else 1
            keep_policy = ocp.checkpoint_managers.AnyPreservationPolicy([
                keep_policy,
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics:
                    (metrics["selection"], sign * metrics.get("step", 0)),
                    reverse=best_mode == "min", n=1, keep_checkpoints_without_metrics=False)
            ])
        with quiet_orbax():  # a garbled step metadata file is logged here, and read again later
            self.manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(preservation_policy=keep_policy,
                                                     enable_async_checkpointing=async_save,
                                                     create=True))
        # Multi-process saves stay on the calling thread: orbax's save synchronizes the processes,
        # and from a worker thread that raced the next step's collectives (2 processes × 2 CPU
        # devices with gloo hung at the first save).
        self.copy_on_device = copy_on_device and async_save and jax.process_count() == 1
        # One worker, so saves reach orbax in step order.
        self._worker = concurrent.futures.ThreadPoolExecutor(1, "flaxlm-checkpoint")
        self._started: concurrent.futures.Future | None = None
        self._copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))

    def all_steps(self) -> list[int]:
        self._join_started()
        return list(self.manager.all_steps())

    def save(self, step: int, state: dict, meta: dict, selection: float | None = None) -> None:
        """Starts an async save of `state` at `step` and returns without waiting for the device.

        `selection` is the held-out metric that ranks checkpoints (see `best_mode`).
        An error of the previous save is raised here (or by `wait`/`close`), never lost.
        """
        self._join_started()
        if self._failed is not None:
            raise self._failed
        if not self.copy_on_device:
            self._save_now(step, state, meta, selection)
            return
        snapshot = self._copy(state)
        self._started = self._worker.submit(self._save_now, step, snapshot, meta, selection)

    def in_progress(self) -> bool:
        """Whether a save is still being copied, transferred or written."""
        started = self._started
        return (started is not None and not started.done()) or \
            self.manager.is_saving_in_progress()

    def _save_now(self, step: int, state: dict, meta: dict, selection: float | None) -> None:
        # Fingerprinted on the devices, from the state being saved (the snapshot in async mode).
        meta = {**meta, checkpoint_integrity.META_KEY: checkpoint_integrity.record(state)}
        train = {k: v for k, v in state.items() if k != "params"}
        self._finish_in_orbax()  # (orbax's save would wait too, blaming no step for a failure)
        try:
            self.manager.save(
                step, args=ocp.args.Composite(params=ocp.args.StandardSave(state["params"]),
                                              train=ocp.args.StandardSave(train),
                                              meta=ocp.args.JsonSave(meta)), force=True,
                metrics=None if selection is None else {
                    "selection": selection,
                    "step": step
                })
        except Exception as e:  # noqa: BLE001 - any storage failure ends the run in one line
            raise self._write_failed(step, e) from None
        self._in_orbax = step

    def _finish_in_orbax(self) -> None:
        """Waits for orbax's background write; its failure ends the run naming the step."""
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            raise self._write_failed(self._in_orbax, e) from None
        self._in_orbax = None

    def _write_failed(self, step: int | None, exc: BaseException) -> FlaxlmError:
        # The traceback is for the log file (flaxlm.run.run_log); the terminal gets one line.
        logging.getLogger(__name__).error("writing checkpoint %s failed", step, exc_info=exc,
                                          extra={"log_file_only": True})
        log_file = run_log.active_file()
        where = f" (traceback in {log_file})" if log_file else ""
        self._failed = CheckpointWriteError(
            f"checkpoint {step} could not be written to {self.directory}/{step}: {_cause(exc)}"
            f"{where}; the run stopped, and the checkpoints written before it are kept")
        return self._failed

    def _join_started(self) -> None:
        """Waits until the last save has been handed to orbax; raises its error if it failed."""
        started, self._started = self._started, None
        if started is not None:
            try:
                started.result()
            except FlaxlmError as e:
                self._failed = e
                raise

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
        """Full state placed with the shardings carried by `abstract_state`'s leaves; raises
        DamageFound if it differs from what was saved or holds NaN/Inf."""
        train_abstract = {k: v for k, v in abstract_state.items() if k != "params"}
        restored = self.manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_state["params"]),
                                          train=ocp.args.StandardRestore(train_abstract),
                                          meta=ocp.args.JsonRestore()))
        state = {"params": restored["params"], **restored["train"]}
        return state, _verified(state, restored["meta"], step, self.directory)

    def restore_latest_intact(self, abstract_state: dict) -> tuple[dict, dict, int] | None:
        """The newest checkpoint that reads back: (state, meta, step), or None if there is none.

        Unreadable ones are reported in one line each and renamed to `<step>.unreadable`. A
        checkpoint whose tree differs from `abstract_state` raises FlaxlmError (settings changed)
        and stays in place, as does everything when no checkpoint is intact.
        """
        self._join_started()
        requested = {
            **tree_shapes(abstract_state["params"], "params."),
            **tree_shapes({
                k: v
                for k, v in abstract_state.items() if k != "params"
            })
        }

        def read(step: int) -> tuple[dict, dict]:
            step_dir = os.path.join(self.directory, str(step))
            if not storage.isdir(os.path.join(step_dir, "train")) and _written_by_import(step_dir):
                raise FlaxlmError(f"{self.workdir} was written by `flaxlm import` (weights "
                                  "only, no optimizer state): train with "
                                  f"--config.init_from={self.workdir} and a new --workdir")
            handler = ocp.StandardCheckpointHandler()
            saved = {
                **tree_shapes(handler.metadata(epath.Path(step_dir, "params")).tree, "params."),
                **tree_shapes(handler.metadata(epath.Path(step_dir, "train")).tree)
            }
            check_tree(saved, requested, step=step, directory=self.directory,
                       max_grad_norm=Workdir(self.workdir).setting("train", "max_grad_norm"))
            return self.restore(step, abstract_state)

        intact, found, moved = _newest_intact(self.all_steps(), read, self.workdir,
                                              set_aside_in=self.directory)
        if found:
            self.manager.reload()
        if intact is not None:
            (state, meta), step = intact
            return state, meta, step
        if found:
            raise nothing_intact(self.directory, found, moved)
        earlier = set_aside_names(self.directory)
        if earlier:
            raise FlaxlmError(f"{self.directory} holds only checkpoints set aside as unreadable "
                              f"({', '.join(earlier)}); restore them from a copy, or move them "
                              "out of checkpoints/ to start over (or use a new --workdir)")
        return None

    def wait(self) -> None:
        self._join_started()
        if self._failed is not None:
            raise self._failed
        self._finish_in_orbax()

    def close(self) -> None:
        """Waits for the last save; after a failed write (already raised) only cleans up."""
        try:
            if self._failed is None:
                self.wait()
        finally:
            self._worker.shutdown(wait=True)
            if self._failed is None:
                self.manager.close()
            else:
                try:
                    self.manager.close()  # re-raises the failure it already reported
                except Exception:  # noqa: BLE001
                    pass


def read_params(workdir: str, abstract_params: Any | None = None,
                step: int | None = None) -> tuple[Any, dict, int]:
    """Weights and metadata of a workdir's checkpoint, without optimizer state: `step`, or else the
    newest that reads back (unreadable ones are reported and skipped; nothing is renamed in a
    workdir that is only read)."""
    directory = Workdir(workdir).checkpoints_dir
    if not storage.isdir(directory):
        raise FlaxlmError(f"{workdir}: no checkpoints/ directory (is this a flaxlm workdir?)")
    with quiet_orbax():
        manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(create=False), item_handlers={
                "params": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()
            })
    # Leaves without a sharding go to this process's first device: the checkpoint's own
    # shardings name the devices of the run that wrote it (e.g. another process's devices
    # after multi-host training), which this process may not have.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def read(s: int) -> tuple[Any, dict]:
        if abstract_params is None:
            abstract = manager.item_metadata(s)["params"]
        else:
            abstract = abstract_params
            saved = ocp.StandardCheckpointHandler().metadata(epath.Path(
                directory, str(s), "params")).tree
            check_tree(tree_shapes(saved, "params."), tree_shapes(abstract, "params."), step=s,
                       directory=directory)
        abstract = jax.tree.map(
            lambda x: x if isinstance(getattr(x, "sharding", None), jax.sharding.Sharding) else jax.
            ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
        restored = manager.restore(
            s, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract),
                                       meta=ocp.args.JsonRestore()))
        params = restored["params"]
        return params, _verified({"params": params}, restored["meta"], s, directory)

    try:
        available = list(manager.all_steps())
        if not available:
            raise FlaxlmError(f"{directory}: no complete checkpoint")
        if step is not None and step not in available:
            raise FlaxlmError(f"{directory}: no checkpoint at step {step} (have {available})")
        intact, found, _ = _newest_intact(available if step is None else [step], read, workdir)
        if intact is None:
            if step is not None:
                raise FlaxlmError(f"checkpoint {step} of {workdir} is {found[0].kind} "
                                  f"({found[0]}); choose another --step, or leave it out for the "
                                  "newest intact one")
            raise nothing_intact(directory, found, [])
        (params, meta), step = intact
        return params, meta, step
    finally:
        manager.close()


def write_params(workdir: str, step: int, params: Any, meta: dict) -> None:
    """A params-only checkpoint (what `flaxlm import` writes): enough for init_from and export."""
    manager = ocp.CheckpointManager(
        Workdir(workdir).checkpoints_dir, options=ocp.CheckpointManagerOptions(create=True))
    meta = {**meta, checkpoint_integrity.META_KEY: checkpoint_integrity.record({"params": params})}
    manager.save(
        step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                      meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()
    manager.close()
    jax.effects_barrier()


def write_weights_only(workdir: str, params: Any, run: dict, source: dict) -> None:
    """A workdir of weights alone (what `flaxlm import` and `prune-vocab` write, its tokenizer
    in the workdir's own tokenizer directory): config.json `{"config": source, **run}` and a
    params-only checkpoint at step 0."""
    run = {**run, "tokenizer": OWN_TOKENIZER}
    Workdir(workdir).write_config({"config": source, **run})
    write_params(workdir, 0, params, {"step": 0, **run, **source})

"""The one trainer. Reads top to bottom: the experiment (mesh, tokenizer, model, objective,
program: flaxlm/experiment.py) → state → workdir record → loop → results. Everything that
differs between recipes comes from the objective (`flaxlm/objectives/`); see
docs/architecture.md.

Resume order: a checkpoint in the workdir, else `init_from` weights (through the objective's init
rules), else a fresh init.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator

import jax
import numpy as np
from tqdm import tqdm

from flaxlm import experiment, storage
from flaxlm.errors import FlaxlmError
from flaxlm.flops import peak_flops_per_device
from flaxlm.run import results as run_results, weights
from flaxlm.run.checkpoint import Checkpointer
from flaxlm.run.log_window import LogWindow
from flaxlm.run.metrics_log import MetricsLog
from flaxlm.run.preemption import StopRequest
from flaxlm.run.protocol import DataPlan, Objective
from flaxlm.run.skipped_updates import SkippedUpdates
from flaxlm.run.steps import State, TrainProgram
from flaxlm.run.throughput import Throughput
from flaxlm.run.workdir import OWN_TOKENIZER, Workdir, same_path
from flaxlm.run_config import RunConfig
from flaxlm.sharding import host_batch_to_global


# -- evaluation ----------------------------------------------------------------------------------
def evaluate(program: TrainProgram, params, mesh, eval_batches: list[dict],
             plan: DataPlan | None = None) -> dict[str, float]:
    # Each batch's outputs come to the host and are reduced there: adding replicated results on
    # the devices between eval steps deadlocked multi-process CPU (gloo) runs (docs/scaling.md),
    # and metrics such as entity F1 need every prediction anyway.
    results = [
        jax.device_get(program.eval_step(params, host_batch_to_global(mesh, b)))
        for b in eval_batches
    ]
    metrics = program.objective.eval_metrics([outputs for outputs, _ in results],
                                             [batch for _, batch in results], plan or DataPlan())
    return {f"eval_{k}": float(v) for k, v in metrics.items()}


class _BestTracker:
    """The objective's selection metric over evaluations; `best.json` names the best step."""
    def __init__(self, objective: Objective, workdir: Workdir, enabled: bool):
        self.selection, self.workdir = objective.selection, workdir
        self.enabled = enabled and self.selection is not None
        saved = self.workdir.read_best() if self.enabled else None
        self.value = saved["value"] if saved else None

    def update(self, step: int, eval_metrics: dict[str, float]) -> bool:
        if not self.enabled:
            return False
        key = f"eval_{self.selection.metric}"
        if key not in eval_metrics:
            raise FlaxlmError(f"the objective selects checkpoints by {self.selection.metric!r}, "
                              f"which its eval metrics lack (have: {', '.join(eval_metrics)})")
        value = eval_metrics[key]
        better = self.value is None or (value > self.value
                                        if self.selection.mode == "max" else value < self.value)
        if better:
            self.value = value
            self.workdir.write_best({
                "step": step,
                "metric": self.selection.metric,
                "mode": self.selection.mode,
                "value": value
            })
        return better


# -- the run -------------------------------------------------------------------------------------
def train(config: RunConfig, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training to the experiment's last step; returns the last logged metrics."""
    is_main, wd = jax.process_index() == 0, Workdir(workdir)
    wd.probe_writable()
    wd.run  # noqa: B018 - a damaged config.json stops here, untouched
    exp = experiment.build(config, wd, is_main=is_main)
    program, objective, loop = exp.program, exp.objective, exp.loop
    if is_main:
        for note in exp.notes:
            print(f"flaxlm: {note}", flush=True)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(program.abstract_state))
    wd.check_free_space(state_bytes, loop.keep_checkpoints)

    checkpointer = Checkpointer(workdir, keep=loop.keep_checkpoints,
                                copy_on_device=loop.checkpoint_copy_on_device,
                                best_mode=objective.selection.mode if objective.selection else None)
    state, examples_done, origin, resumed, window = _starting_state(exp, checkpointer)
    start = int(jax.device_get(state["step"]))
    if is_main:
        _record_run(exp, wd, start)
    eval_batches = (objective.eval_batches(exp.ctx)
                    if exp.ctx.data.eval_files or exp.ctx.data.fold >= 0 else [])
    run = _Loop(exp, wd, checkpointer, state, examples_done, resumed, eval_batches, window,
                progress=progress, is_main=is_main)
    if is_main:
        frozen = f" + {program.frozen_count():,} frozen" if program.frozen_count() else ""
        print(
            f"flaxlm: {origin}; {program.param_count():,} parameters{frozen}; mesh "
            f"{dict(exp.mesh.shape)}; training steps {start}→{loop.steps}", flush=True)
        for note in program.sharding_notes:
            print(f"flaxlm: sharding: {note}", flush=True)

    try:
        with run.stop.installed():
            run.steps(objective.train_batches(exp.ctx, examples_done))
        checkpointer.wait()
    finally:
        run.bar.close()
        checkpointer.close()
        run.log.close()
    last, stopped_by = run.last, run.stop.signal_name
    if stopped_by and is_main:
        print(
            f"flaxlm: received {stopped_by}; checkpoint saved at step {last.get('step')}; "
            "run the same command to resume", flush=True)
    if not stopped_by and objective.selection is not None:
        last["results"] = run_results.finish(
            workdir, objective=objective, test_batches=exp.test_batches,
            evaluate=lambda params, batches: evaluate(program, params, exp.mesh, batches, exp.plan),
            final_params=run.state["params"], abstract_params=exp.abstract_state["params"],
            final_step=int(jax.device_get(run.state["step"])), param_count=program.param_count(),
            steps_per_epoch=loop.eval_every if exp.plan.epochs else 0, is_main=is_main,
            test_on=config.test_on)
    last["stopped_by"] = stopped_by
    last["summary_keys"] = objective.summary_keys
    return last


def _starting_state(exp: experiment.Experiment,
                    checkpointer: Checkpointer) -> tuple[State, int, str, bool, LogWindow]:
    """The workdir's newest intact checkpoint, else `init_from` weights (through the objective's
    init rules), else a fresh init; frozen variables are always re-read from their source.
    Returns (state, examples already trained on, a line saying where the state came from,
    whether it was resumed, the log window the checkpoint left open)."""
    program, init_from = exp.program, exp.config.init_from
    rng_data = np.asarray(jax.random.key_data(jax.random.key(exp.config.seed)))
    frozen = program.init_frozen(rng_data)
    restored = checkpointer.restore_latest_intact(exp.abstract_state)
    if restored is not None:
        state, meta, latest = restored
        _, frozen, frozen_weights = weights.load(program, exp.objective, init_from, None, frozen)
        origin = f"resumed from checkpoint {latest}" + (f"; frozen {frozen_weights}"
                                                        if frozen_weights else "")
        # Older checkpoints recorded batches; examples make a changed batch size resume exactly.
        examples_done = meta.get("examples_consumed", latest * exp.loop.batch_size)
        window = LogWindow(meta.get("log_window"))
    else:
        state, frozen, loaded = weights.load(program, exp.objective, init_from,
                                             program.fresh_state(rng_data), frozen)
        origin, examples_done, window = loaded or "initialized from scratch", 0, LogWindow()
    program.set_frozen(frozen)
    return state, examples_done, origin, restored is not None, window


def _record_run(exp: experiment.Experiment, wd: Workdir, start: int) -> None:
    """Self-contained workdir: the resolved config (JSON) and the tokenizer travel with the
    checkpoints; metrics past `start` (from a run that did not checkpoint them) are dropped."""
    if not same_path(exp.tokenizer_dir, wd.own_tokenizer_dir):
        storage.copy_tree(exp.tokenizer_dir, wd.own_tokenizer_dir)
    wd.write_config({
        "config": exp.config.raw,
        "model": dataclasses.asdict(exp.model_config),
        "objective": exp.config.objective,
        "head": exp.objective.head,
        "tokenizer": OWN_TOKENIZER,
        "decay_steps": exp.optim.total_steps,
        **exp.plan.run_record
    })
    wd.truncate_metrics(start)


class _Loop:
    """The step loop. A step's metrics are fetched one step late (`_held`), while the device is
    already busy with the next step; they are fetched at once before an evaluation or a
    checkpoint, since that step's finite flag decides whether it may be saved."""
    def __init__(self, exp: experiment.Experiment, workdir: Workdir, checkpointer: Checkpointer,
                 state: State, examples_done: int, resumed: bool, eval_batches: list,
                 window: LogWindow, *, progress: bool, is_main: bool):
        self.exp, self.loop, self.program = exp, exp.loop, exp.program
        self.checkpointer, self.state, self.eval_batches = checkpointer, state, eval_batches
        self.is_main, self.examples_done, self.window = is_main, examples_done, window
        self.start = int(jax.device_get(state["step"]))
        self.skips = SkippedUpdates(max_in_a_row=self.loop.max_skipped_in_a_row,
                                    max_share=self.loop.max_skipped_share, start_step=self.start,
                                    last_checkpoint=self.start if resumed else None)
        objective, data = exp.objective, exp.ctx.data
        peak = self.loop.peak_flops_per_device or peak_flops_per_device(
            jax.devices()[0].device_kind,
            jax.devices()[0].platform)
        spec = objective.batch_spec(self.loop.batch_size, data)
        self.throughput = Throughput(
            lambda counts: objective.train_flops(exp.model_config, data.seq_len, counts),
            objective.real_counts({
                k: np.ones(s.shape, s.dtype)
                for k, s in spec.items()
            }), peak * jax.device_count(), jax.process_count())
        self.log = MetricsLog(workdir.path, enabled=is_main)
        self.best = _BestTracker(objective, workdir, enabled=is_main)
        self.stop = StopRequest()
        self.bar = tqdm(total=self.loop.steps, initial=self.start,
                        disable=not (progress and is_main), dynamic_ncols=True, unit="step")
        self.last: dict[str, Any] = {}
        self._held: tuple[int, Any, bool] | None = None  # (step, device metrics, logged)

    def steps(self, stream: Iterator[dict]) -> None:
        for step in range(self.start + 1, self.loop.steps + 1):
            self._step(step, next(stream))
            if self.stop.signal_name:
                break
        self._fetch_held()

    def _step(self, step: int, host_batch: dict) -> None:
        loop, program = self.loop, self.program
        global_batch = host_batch_to_global(self.exp.mesh, host_batch)
        # A batch of a new length bucket compiles: that step stays out of the throughput.
        compiling = program.compiles("train", global_batch) and step > self.start + 1
        if compiling:
            jax.block_until_ready(self.state)
            compile_began = time.perf_counter()
        self.state, metrics = program.train_step(self.state, global_batch)
        self.stop.poll(step)
        self._fetch_held()
        if step == self.start + 1:
            jax.block_until_ready(metrics)  # compilation stays out of the throughput
            self.throughput.start()
        elif compiling:
            jax.block_until_ready(metrics)
            self.throughput.exclude(time.perf_counter() - compile_began)
            if self.is_main:
                self.bar.write(f"flaxlm: step {step}: the train step compiled for batch shape "
                               f"{tuple(global_batch['input_ids'].shape)} (compilation "
                               f"{program.compiles('train')})")
        else:
            # Counted after fetching step - 1, so a window holds exactly its own steps.
            self.throughput.add(self.exp.objective.real_counts(host_batch))
        self.bar.update(1)
        # Every step's flag is checked (one step late), not only the logged ones': a non-finite
        # update stops nan_policy=stop, and counts towards skip's limits.
        self._held = (step, metrics, self._closes_window(step) or step == loop.steps
                      or bool(self.stop.signal_name))
        selection = None
        if (loop.eval_every and step % loop.eval_every == 0) or (step == loop.steps
                                                                 and not self.stop.signal_name):
            self._fetch_held()
            selection = self._evaluate(step)
        # An evaluated step with a selection metric is saved too, so the best one exists. A
        # signal (read again: it may arrive at any moment) saves this step before the loop stops.
        if (step % loop.checkpoint_every == 0 or step == loop.steps or self.stop.signal_name
                or selection is not None):
            self._fetch_held()
            self.skips.before_checkpoint(step)
            self.checkpointer.save(step, self.state, self._meta(step), selection)
            self.skips.checkpointed(step)

    def _closes_window(self, step: int) -> bool:
        """Lines close their window on the log_every grid and at every evaluation, so no window
        straddles an evaluation and the lines since one evaluation are exactly its epoch."""
        loop = self.loop
        return step % loop.log_every == 0 or bool(loop.eval_every and step % loop.eval_every == 0)

    def _fetch_held(self) -> None:
        if self._held is None:
            return
        step, device_metrics, logged = self._held
        self._held = None
        values = {k: v.item() for k, v in jax.device_get(device_metrics).items()}
        applied = values.pop("finite")
        if not applied and self.loop.nan_policy == "stop":
            raise FlaxlmError(f"non-finite loss or gradient at step {step} (train.nan_policy="
                              "stop); the update was not applied and checkpoints are clean")
        self.skips.observe(step, applied)
        if applied:
            self.window.add(values)
        if not logged:
            return
        values = self.window.means(values)
        # A line off the grid (the run's last step, a signal) leaves its window open: the
        # checkpoint carries it, so a resumed or extended run's next line covers the steps an
        # uninterrupted run's would.
        if self._closes_window(step):
            self.window.reset()
        values.update(self.throughput.measure())
        values["train_compiles"] = self.program.compiles("train")
        self.log.write(step, values)
        self.last.update(values, step=step)
        shown = {k: f"{values[k]:.3f}" for k in self.exp.objective.summary_keys if k in values}
        self.bar.set_postfix(**shown, tok_s=f"{values.get('tokens_per_sec', 0):.0f}")

    def _evaluate(self, step: int) -> float | None:
        """Evaluates; returns the selection metric's value (None without one)."""
        if not self.eval_batches:
            return None
        began = time.perf_counter()
        values = evaluate(self.program, self.state["params"], self.exp.mesh, self.eval_batches,
                          self.exp.plan)
        values["eval_compiles"] = self.program.compiles("eval")
        best = self.best
        if best.update(step, values):
            values[f"best_eval_{best.selection.metric}"] = best.value
        self.log.write(step, values)
        self.last.update(values)
        self.throughput.exclude(time.perf_counter() - began)
        return values[f"eval_{best.selection.metric}"] if best.enabled else None

    def _meta(self, step: int) -> dict:
        examples = self.examples_done + (step - self.start) * self.loop.batch_size
        return {
            "step": step,
            "examples_consumed": examples,
            "log_window": self.window.state(),
            "model": dataclasses.asdict(self.exp.model_config),
            "objective": self.exp.config.objective,
            "tokenizer": OWN_TOKENIZER
        }

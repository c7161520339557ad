"""The one trainer. Reads top to bottom: workdir → mesh → tokenizer → model → program → state →
data → loop. Everything that differs between recipes comes from the objective
(`flaxlm/objectives/`); see docs/architecture.md.

Resume order: a checkpoint in the workdir, else `init_from` weights (through the objective's init
rules), else a fresh init.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Iterator

import jax
import numpy as np
from tqdm import tqdm

from flaxlm import storage
from flaxlm.run.workdir import OWN_TOKENIZER, Workdir, same_path
from flaxlm.run.checkpoint import Checkpointer
from flaxlm.data.run_tokenizer import check_tokenizer_fits, tokenizer_for_run
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.flops import peak_flops_per_device
from flaxlm.init_weights import load_weights, resolve_model
from flaxlm.run.metrics_log import MetricsLog
from flaxlm.models.config import preset
from flaxlm.objectives.base import DataContext, Objective
from flaxlm.objectives.registry import make_objective
from flaxlm.optim import learning_rate_schedule, make_optimizer
from flaxlm.preemption import StopRequest
from flaxlm.run_config import RunConfig
from flaxlm.sharding import data_parallel_size, host_batch_to_global, make_mesh
from flaxlm.skipped_updates import SkippedUpdates
from flaxlm.steps import TrainProgram
from flaxlm.run import results as run_results
from flaxlm.throughput import Throughput

# Model fields whose change makes a checkpoint unusable; dropout rates may change on resume.
_SHAPE_FIELDS = ("arch", "vocab_size", "hidden_size", "num_layers", "num_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size",
                 "pad_token_id", "head_dim")


# -- evaluation ----------------------------------------------------------------------------------
def evaluate(program: TrainProgram, params, mesh, eval_batches: list[dict]) -> dict[str, float]:
    # Each batch's outputs come to the host and are reduced there: adding replicated results on
    # the devices between eval steps deadlocked multi-process CPU (gloo) runs (docs/scaling.md),
    # and metrics such as entity F1 need every prediction anyway.
    results = [jax.device_get(program.eval_step(params, host_batch_to_global(mesh, b)))
               for b in eval_batches]
    metrics = program.objective.eval_metrics([outputs for outputs, _ in results],
                                             [batch for _, batch in results])
    return {f"eval_{k}": float(v) for k, v in metrics.items()}


class _BestTracker:
    """The objective's selection metric over evaluations; `best.json` names the best step."""

    def __init__(self, objective: Objective, workdir: str, enabled: bool):
        self.selection, self.workdir = objective.selection, Workdir(workdir)
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
        better = self.value is None or (value > self.value if self.selection.mode == "max"
                                        else value < self.value)
        if better:
            self.value = value
            self.workdir.write_best({"step": step, "metric": self.selection.metric,
                                     "mode": self.selection.mode, "value": value})
        return better


# -- what the data and epochs fix --------------------------------------------------------------
def _check_same_record(workdir: str, saved_run: dict | None, record) -> None:
    """What the data fixed when the workdir was created (a label set) must not change on resume."""
    for key, value in record.items():
        saved = (saved_run or {}).get(key)
        if saved is not None and saved != json.loads(json.dumps(value)):
            raise FlaxlmError(
                f"{Workdir(workdir).config_file}: {key} = {saved} but the data now "
                f"gives {list(value) if isinstance(value, tuple) else value}; its checkpoints fit "
                "the former: use the original data or a new --workdir")


def _epoch_plan(loop, optim, data_plan, config: RunConfig):
    """With `epochs`: steps = epochs × steps per epoch, an evaluation after every epoch, and the
    decay over those steps; then `train.warmup_proportion` of the decay horizon as warmup.
    Returns (loop, optim, a line saying what epochs did, or None)."""
    def with_warmup(optim):
        if not config.warmup_proportion:
            return optim
        return dataclasses.replace(optim, warmup_steps=round(
            config.warmup_proportion * optim.total_steps))
    if not data_plan.epochs:
        return loop, with_warmup(optim), None
    per_epoch = -(-data_plan.examples_per_epoch // loop.batch_size)
    steps = data_plan.epochs * per_epoch
    loop = dataclasses.replace(loop, steps=steps, eval_every=per_epoch)
    if not config.raw["train"]["decay_steps"]:
        optim = dataclasses.replace(optim, total_steps=steps)
    return loop, with_warmup(optim), (
        f"{data_plan.epochs} epochs × {per_epoch} steps ({data_plan.examples_per_epoch} examples, "
        f"batch {loop.batch_size}) = {steps} steps (train.steps is not used); evaluating every "
        f"{per_epoch} steps")


# -- the run -------------------------------------------------------------------------------------
def train(config: RunConfig, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training to `config.loop.steps`; returns the last logged metrics."""
    loop = config.loop
    is_main = jax.process_index() == 0
    wd = Workdir(workdir)
    wd.probe_writable()
    saved_run = wd.run  # a damaged config.json stops here, untouched

    # Mesh: validated against the devices and the batch before anything compiles.
    mesh = make_mesh(config.mesh)
    dp, accum, procs = data_parallel_size(mesh), config.step.grad_accum_steps, jax.process_count()
    if loop.batch_size % (dp * accum):
        raise FlaxlmError(
            f"train.batch_size={loop.batch_size} must be divisible by data-parallel size {dp} "
            f"(mesh data×fsdp) × train.grad_accum_steps={accum}")
    if loop.batch_size % procs:
        raise FlaxlmError(f"train.batch_size={loop.batch_size} must be divisible by the "
                          f"{procs} processes")

    # Tokenizer and model shapes. With init_from, the tokenizer defaults to the imported one.
    # Without any, one is trained on the text train_files into <workdir>/tokenizer (and reused).
    tokenizer_dir = config.data.tokenizer
    if not tokenizer_dir and config.init_from:
        tokenizer_dir = Workdir(config.init_from).tokenizer_dir
    tokenizer_dir = tokenizer_for_run(
        tokenizer_dir, config.data.train_files, wd.own_tokenizer_dir,
        kind=config.data_tokenizer_kind,
        vocab_size=config.data_tokenizer_vocab_size,
        model_vocab_size=config.model_overrides.get(
            "vocab_size", preset(config.model_preset).vocab_size), is_main=is_main,
        text_field=config.data.text_field)
    wd.check_same_tokenizer(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    data_config = dataclasses.replace(config.data, tokenizer=tokenizer_dir)
    model_config = resolve_model(config, tokenizer)

    # The objective reads what it needs of its data first: a label set fixes the classifier's
    # width, an epoch size fixes the number of steps.
    objective = make_objective(config.objective, config.objective_sections)
    host_batch = loop.batch_size // procs
    ctx = DataContext(data_config, tokenizer, config.seed, host_batch, jax.process_index(), procs,
                      token_types=model_config.type_vocab_size > 0,
                      type_vocab_size=model_config.type_vocab_size)
    data_plan = objective.plan_data(ctx)
    # Read (and checked) now, so bad test data stops the run before anything compiles.
    test_batches = (objective.eval_batches(run_results.test_context(ctx))
                    if data_config.test_files else [])
    if data_plan.model_overrides:
        model_config = dataclasses.replace(model_config, **data_plan.model_overrides)
        model_config.validate()
    _check_same_record(workdir, saved_run, data_plan.run_record)
    # Out-of-range ids would become NaN rows and a mismatched pad id would mask real tokens:
    # both are refused here, before anything compiles.
    check_tokenizer_fits(tokenizer, model_config, model_source=(
        f"init_from={config.init_from}/config.json" if config.init_from
        else f"preset {config.model_preset!r} + model overrides"))
    if data_config.seq_len > model_config.max_seq_len:
        raise FlaxlmError(f"data.seq_len={data_config.seq_len} exceeds the model's "
                          f"{model_config.max_seq_len} positions")
    wd.check_same_model(dataclasses.asdict(model_config), _SHAPE_FIELDS)

    # The decay horizon is fixed by the run that created the workdir (a continuation keeps it).
    optim = config.optim
    saved_horizon = (saved_run or {}).get("decay_steps")
    if saved_horizon and not config.raw["train"]["decay_steps"]:
        optim = dataclasses.replace(optim, total_steps=saved_horizon)
    loop, optim, epoch_note = _epoch_plan(loop, optim, data_plan, config)
    if is_main:
        for note in data_plan.notes:
            print(f"flaxlm: {note}", flush=True)
        if epoch_note:
            print(f"flaxlm: {epoch_note}; warmup {optim.warmup_steps} steps, decay over "
                  f"{optim.total_steps}", flush=True)
    if loop.steps > optim.total_steps and is_main:
        print(f"flaxlm: steps past {optim.total_steps} (the decay horizon) run at "
              f"end_learning_rate={optim.end_learning_rate}; set --config.train.decay_steps "
              "to re-plan the decay", flush=True)

    schedule = learning_rate_schedule(optim)
    program = TrainProgram(objective, model_config, make_optimizer(optim), schedule, mesh,
                           config.step)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(program.abstract_state))
    wd.check_free_space(state_bytes, loop.keep_checkpoints)

    # State: workdir checkpoint > init_from > scratch.
    checkpointer = Checkpointer(
        workdir, keep=loop.keep_checkpoints, copy_on_device=loop.checkpoint_copy_on_device,
        best_mode=objective.selection.mode if objective.selection else None)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            program.abstract_state, program.state_shardings)
    rng_data = np.asarray(jax.random.key_data(jax.random.key(config.seed)))
    program.set_frozen(program.init_frozen(rng_data))
    restored = checkpointer.restore_latest_intact(abstract)
    examples_done = 0
    if restored is not None:
        state, meta, latest = restored
        _, frozen_weights = load_weights(program, objective, config, None)
        origin = f"resumed from checkpoint {latest}" + (
            f"; frozen {frozen_weights}" if frozen_weights else "")
        # Older checkpoints recorded batches; examples make a changed batch size resume exactly.
        examples_done = meta.get("examples_consumed", latest * loop.batch_size)
    else:
        state, weights = load_weights(program, objective, config, program.init_state(rng_data))
        origin = weights or "initialized from scratch"
    start = int(jax.device_get(state["step"]))
    skips = SkippedUpdates(max_in_a_row=loop.max_skipped_in_a_row,
                           max_share=loop.max_skipped_share, start_step=start,
                           last_checkpoint=start if restored is not None else None)

    # Self-contained workdir: resolved config (JSON) and the tokenizer travel with checkpoints.
    if is_main:
        if not same_path(tokenizer_dir, wd.own_tokenizer_dir):
            storage.copy_tree(tokenizer_dir, wd.own_tokenizer_dir)
        wd.write_config({
            "config": config.raw, "model": dataclasses.asdict(model_config),
            "objective": config.objective, "head": objective.head, "tokenizer": OWN_TOKENIZER,
            "decay_steps": optim.total_steps, **data_plan.run_record})
        wd.truncate_metrics(start)

    # Data: the objective's own batches, starting at the first example not yet trained on.
    stream: Iterator[dict] = objective.train_batches(ctx, examples_done)
    eval_batches = (objective.eval_batches(ctx) if data_config.eval_files or data_config.fold >= 0
                    else [])

    peak = loop.peak_flops_per_device or peak_flops_per_device(
        jax.devices()[0].device_kind, jax.devices()[0].platform)
    spec = objective.batch_spec(loop.batch_size, data_config)
    throughput = Throughput(
        lambda counts: objective.train_flops(model_config, data_config.seq_len, counts),
        objective.real_counts({k: np.ones(s.shape, s.dtype) for k, s in spec.items()}),
        peak * jax.device_count(), procs)
    log = MetricsLog(workdir, enabled=is_main)
    best = _BestTracker(objective, workdir, enabled=is_main)
    if is_main:
        frozen = f" + {program.frozen_count():,} frozen" if program.frozen_count() else ""
        print(f"flaxlm: {origin}; {program.param_count():,} parameters{frozen}; mesh "
              f"{dict(mesh.shape)}; training steps {start}→{loop.steps}", flush=True)
        for note in program.sharding_notes:
            print(f"flaxlm: sharding: {note}", flush=True)

    def meta(step: int, extra: dict | None = None) -> dict:
        return {"step": step, "examples_consumed": examples_done + (step - start) * loop.batch_size,
                "model": dataclasses.asdict(model_config), "objective": config.objective,
                "tokenizer": OWN_TOKENIZER, **(extra or {})}

    last: dict[str, Any] = {}
    stop = StopRequest()
    bar = tqdm(total=loop.steps, initial=start, disable=not (progress and is_main),
               dynamic_ncols=True, unit="step")

    def emit(step: int, device_metrics, logged: bool) -> None:
        # Fetched one step late: the device is already busy with the next step.
        values = {k: v.item() for k, v in jax.device_get(device_metrics).items()}
        applied = values.pop("finite")
        if not applied and loop.nan_policy == "stop":
            raise FlaxlmError(f"non-finite loss or gradient at step {step} (train.nan_policy="
                              "stop); the update was not applied and checkpoints are clean")
        skips.observe(step, applied)
        if not logged:
            return
        values.update(throughput.measure())
        values["train_compiles"] = program.compiles("train")
        log.write(step, values)
        last.update(values, step=step)
        shown = {k: f"{values[k]:.3f}" for k in objective.summary_keys if k in values}
        bar.set_postfix(**shown, tok_s=f"{values.get('tokens_per_sec', 0):.0f}")

    def run_eval(step: int) -> float | None:
        """Evaluates; returns the selection metric's value (None without one)."""
        if not eval_batches:
            return None
        began = time.perf_counter()
        values = evaluate(program, state["params"], mesh, eval_batches)
        values["eval_compiles"] = program.compiles("eval")
        if best.update(step, values):
            values[f"best_eval_{best.selection.metric}"] = best.value
        log.write(step, values)
        last.update(values)
        throughput.exclude(time.perf_counter() - began)
        return values[f"eval_{best.selection.metric}"] if best.enabled else None

    pending = None
    try:
        with stop.installed():
            for step in range(start + 1, loop.steps + 1):
                host_batch_ = next(stream)
                global_batch = host_batch_to_global(mesh, host_batch_)
                # A batch of a new length bucket compiles: that step stays out of the throughput.
                compiling = program.compiles("train", global_batch) and step > start + 1
                if compiling:
                    jax.block_until_ready(state)
                    compile_began = time.perf_counter()
                state, metrics = program.train_step(state, global_batch)
                stop.poll(step)
                if pending is not None:
                    emit(*pending)
                    pending = None
                if step == start + 1:
                    jax.block_until_ready(metrics)  # compilation stays out of the throughput
                    throughput.start()
                elif compiling:
                    jax.block_until_ready(metrics)
                    throughput.exclude(time.perf_counter() - compile_began)
                    if is_main:
                        bar.write(f"flaxlm: step {step}: the train step compiled for batch shape "
                                  f"{tuple(global_batch['input_ids'].shape)} (compilation "
                                  f"{program.compiles('train')})")
                else:
                    # Counted after emitting step - 1, so a window holds exactly its own steps.
                    throughput.add(objective.real_counts(host_batch_))
                bar.update(1)
                logged = step % loop.log_every == 0 or step == loop.steps or bool(stop.signal_name)
                # Every step's flag is checked (one step late), not only the logged ones': a
                # non-finite update stops nan_policy=stop, and counts towards skip's limits.
                pending = (step, metrics, logged)
                selection = None
                if (loop.eval_every and step % loop.eval_every == 0) or (
                        step == loop.steps and not stop.signal_name):
                    if pending is not None:
                        emit(*pending)
                        pending = None
                    selection = run_eval(step)
                # An evaluated step with a selection metric is saved too, so the best one exists.
                if (step % loop.checkpoint_every == 0 or step == loop.steps or stop.signal_name
                        or selection is not None):
                    if pending is not None:  # this step's flag decides whether it may be saved
                        emit(*pending)
                        pending = None
                    skips.before_checkpoint(step)
                    checkpointer.save(step, state, meta(step), selection)
                    skips.checkpointed(step)
                if stop.signal_name:
                    break
            if pending is not None:
                emit(*pending)
        checkpointer.wait()
    finally:
        bar.close()
        checkpointer.close()
        log.close()
    if stop.signal_name and is_main:
        print(f"flaxlm: received {stop.signal_name}; checkpoint saved at step {last.get('step')}; "
              "run the same command to resume", flush=True)
    if not stop.signal_name and objective.selection is not None:
        last["results"] = run_results.finish(
            workdir, objective=objective, test_batches=test_batches,
            evaluate=lambda params, batches: evaluate(program, params, mesh, batches),
            final_params=state["params"], abstract_params=abstract["params"],
            final_step=int(jax.device_get(state["step"])), param_count=program.param_count(),
            steps_per_epoch=loop.eval_every if data_plan.epochs else 0, is_main=is_main,
            test_on=config.test_on)
    last["stopped_by"] = stop.signal_name
    last["summary_keys"] = objective.summary_keys
    return last


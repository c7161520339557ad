"""The one trainer. Reads top to bottom: workdir → mesh → tokenizer → program → state → data → loop.

Resume order: a checkpoint in the workdir, else `init_from` weights, else a fresh init.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import time
from typing import Any, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from flaxlm.checkpoint import Checkpointer, read_params
from flaxlm.data.pipeline import build_eval_batches, build_train_stream, max_predictions
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.flops import peak_flops_per_device
from flaxlm.metrics_log import MetricsLog
from flaxlm.models.config import ModelConfig
from flaxlm.objectives.mlm import MaskedLM
from flaxlm.optim import learning_rate_schedule, make_optimizer
from flaxlm.run_config import RunConfig
from flaxlm.sharding import data_parallel_size, host_batch_to_global, make_mesh
from flaxlm.steps import TrainProgram

OBJECTIVES = {"mlm": MaskedLM}
# Model fields whose change makes a checkpoint unusable; dropout rates may change on resume.
_SHAPE_FIELDS = ("arch", "vocab_size", "hidden_size", "num_layers", "num_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size",
                 "pad_token_id", "head_dim")


# -- workdir -------------------------------------------------------------------------------------
def _probe_workdir(workdir: str) -> None:
    """Fail before compiling if the workdir cannot take a file."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe.{jax.process_index()}")
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise FlaxlmError(f"workdir {workdir} is not writable: {e.strerror}") from None


def _check_free_space(workdir: str, state_bytes: int, keep: int) -> None:
    """Refuse to start a run whose checkpoints cannot fit, instead of failing mid-save."""
    # An async save holds one new checkpoint next to the kept ones until it commits.
    needed = state_bytes * (keep + 1)
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise FlaxlmError(f"workdir {workdir} has {free / 2**20:.0f} MiB free but {keep} kept "
                          f"checkpoints plus one in flight need ~{needed / 2**20:.0f} MiB; free "
                          "space or lower train.keep_checkpoints")


def _write_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _check_resumable(workdir: str, model_config: ModelConfig) -> None:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f).get("model", {})
    differing = [k for k in _SHAPE_FIELDS
                 if k in saved and saved[k] != getattr(model_config, k)]
    if differing:
        details = ", ".join(f"model.{k}: saved {saved[k]!r} vs requested "
                            f"{getattr(model_config, k)!r}" for k in differing)
        raise FlaxlmError(f"{workdir} holds a run with a different model ({details}); "
                          "use a new --workdir or the saved settings")


def _truncate_metrics(workdir: str, after_step: int) -> None:
    """Drop log lines a killed run wrote past its last checkpoint; the resumed run rewrites them."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [l for l in f if l.strip()]
    kept = [l for l in lines if json.loads(l).get("step", 0) <= after_step]
    if len(kept) != len(lines):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)


# -- preemption ----------------------------------------------------------------------------------
class _StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints and exits cleanly.

    With several processes every host must checkpoint the same step, but a signal reaches hosts at
    different steps. There SIGTERM is left to JAX's preemption service (started by
    `jax.distributed.initialize`), which agrees on one step for all hosts: `poll` turns its
    `reached_preemption_sync_point` into the stop flag. SIGINT keeps its default there (the
    process exits without a checkpoint and launch/local.py stops the others).
    """

    def __init__(self):
        self.signal_name: str | None = None
        self.synced = jax.process_count() > 1 and _has_preemption_service()

    def poll(self, step: int) -> None:
        if self.synced and multihost_utils.reached_preemption_sync_point(step):
            self.signal_name = self.signal_name or "SIGTERM"

    @contextlib.contextmanager
    def installed(self):
        import threading
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        signals = () if self.synced else (signal.SIGTERM, signal.SIGINT)
        previous = {s: signal.getsignal(s) for s in signals}

        def handler(signum, _frame):
            self.signal_name = signal.Signals(signum).name
        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _has_preemption_service() -> bool:
    try:
        multihost_utils.reached_preemption_sync_point(-1)  # raises without the service
        return True
    except RuntimeError:
        return False


# -- evaluation ----------------------------------------------------------------------------------
def evaluate(program: TrainProgram, params, mesh, eval_batches: list[dict]) -> dict[str, float]:
    totals = None
    for host_batch in eval_batches:
        # Summed on the host: adding the replicated results on the devices between eval steps
        # deadlocked multi-process CPU (gloo) runs (docs/scaling.md).
        sums = jax.device_get(program.eval_step(params, host_batch_to_global(mesh, host_batch)))
        totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    metrics = program.objective.metrics(totals)
    return {f"eval_{k}": float(v) for k, v in metrics.items()}


# -- the run -------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Throughput:
    tokens_per_step: int
    flops_per_step: float
    peak_flops: float
    last_time: float = 0.0
    last_step: int = 0

    def measure(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps, seconds = step - self.last_step, now - self.last_time
        self.last_time, self.last_step = now, step
        if steps <= 0 or seconds <= 0:
            return {}
        out = {"steps_per_sec": steps / seconds,
               "tokens_per_sec": steps * self.tokens_per_step / seconds}
        if self.peak_flops:
            out["mfu"] = steps * self.flops_per_step / seconds / self.peak_flops
        return out


def _resolve_model(config: RunConfig, tokenizer_vocab: int) -> tuple[ModelConfig, dict | None]:
    if not config.init_from:
        return config.model(tokenizer_vocab), None
    meta_path = os.path.join(config.init_from, "config.json")
    if not os.path.exists(meta_path):
        raise FlaxlmError(f"init_from={config.init_from}: no config.json (is it a flaxlm workdir?)")
    with open(meta_path, encoding="utf-8") as f:
        saved = json.load(f)["model"]
    # The imported shapes win; dropout may still be set from this config.
    dropout = {k: v for k, v in config.model_overrides.items() if k.endswith("dropout")}
    return ModelConfig(**{**saved, **dropout}), saved


def train(config: RunConfig, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training to `config.loop.steps`; returns the last logged metrics."""
    loop = config.loop
    is_main = jax.process_index() == 0
    _probe_workdir(workdir)

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
    tokenizer_dir = config.data.tokenizer
    if not tokenizer_dir and config.init_from:
        tokenizer_dir = os.path.join(config.init_from, "tokenizer")
    if not tokenizer_dir:
        raise FlaxlmError("data.tokenizer is empty: set --config.data.tokenizer=DIR "
                          "(train one with `flaxlm tokenizer`)")
    tokenizer = load_tokenizer(tokenizer_dir)
    data_config = dataclasses.replace(config.data, tokenizer=tokenizer_dir)
    model_config, _ = _resolve_model(config, tokenizer.vocab_size)
    if data_config.seq_len > model_config.max_seq_len:
        raise FlaxlmError(f"data.seq_len={data_config.seq_len} exceeds the model's "
                          f"{model_config.max_seq_len} positions")
    _check_resumable(workdir, model_config)

    objective = OBJECTIVES[config.objective]()
    schedule = learning_rate_schedule(config.optim)
    program = TrainProgram(objective, model_config, make_optimizer(config.optim), schedule,
                           mesh, config.step)

    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(program.abstract_state))
    _check_free_space(workdir, state_bytes, loop.keep_checkpoints)

    # State: workdir checkpoint > init_from > scratch.
    checkpointer = Checkpointer(workdir, keep=loop.keep_checkpoints,
                                copy_on_device=loop.checkpoint_copy_on_device)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            program.abstract_state, program.state_shardings)
    rng_data = np.asarray(jax.random.key_data(jax.random.key(config.seed)))
    restored = checkpointer.restore_latest_intact(abstract)
    if restored is not None:
        state, _, latest = restored
        origin = f"resumed from checkpoint {latest}"
    elif config.init_from:
        params, _, init_step = read_params(config.init_from, abstract["params"])
        state = jax.jit(program.state_from_params, out_shardings=program.state_shardings)(
            params, rng_data)
        origin = f"initialized from {config.init_from} (step {init_step})"
    else:
        state = program.init_state(rng_data)
        origin = "initialized from scratch"
    start = int(jax.device_get(state["step"]))

    # Self-contained workdir: resolved config (JSON) and the tokenizer travel with checkpoints.
    local_tokenizer = os.path.join(workdir, "tokenizer")
    if is_main:
        if os.path.abspath(tokenizer_dir) != os.path.abspath(local_tokenizer):
            shutil.copytree(tokenizer_dir, local_tokenizer, dirs_exist_ok=True)
        _write_json_atomic(os.path.join(workdir, "config.json"), {
            "config": config.raw, "model": dataclasses.asdict(model_config),
            "objective": config.objective, "tokenizer": "tokenizer"})
        _truncate_metrics(workdir, start)

    m = max_predictions(data_config)
    host_batch = loop.batch_size // procs
    stream: Iterator[dict] = build_train_stream(
        data_config, tokenizer, seed=config.seed, host_batch_size=host_batch, start_batch=start,
        process_index=jax.process_index(), process_count=procs)
    eval_batches = (build_eval_batches(data_config, tokenizer, host_batch_size=host_batch,
                                       seed=config.seed, process_index=jax.process_index(),
                                       process_count=procs)
                    if data_config.eval_files else [])

    peak = loop.peak_flops_per_device or peak_flops_per_device(
        jax.devices()[0].device_kind, jax.devices()[0].platform)
    throughput = _Throughput(
        tokens_per_step=loop.batch_size * data_config.seq_len,
        flops_per_step=loop.batch_size * objective.train_flops_per_example(
            model_config, data_config.seq_len, m),
        peak_flops=peak * jax.device_count())
    log = MetricsLog(workdir, enabled=is_main)
    if is_main:
        print(f"flaxlm: {origin}; {program.param_count():,} parameters; mesh "
              f"{dict(mesh.shape)}; training steps {start}→{loop.steps}", flush=True)

    def meta(step: int, extra: dict | None = None) -> dict:
        return {"step": step, "data_position": step, "model": dataclasses.asdict(model_config),
                "objective": config.objective, "tokenizer": "tokenizer", **(extra or {})}

    last: dict[str, Any] = {}
    stop = _StopRequest()
    bar = tqdm(total=loop.steps, initial=start, disable=not (progress and is_main),
               dynamic_ncols=True, unit="step")
    throughput.last_time, throughput.last_step = time.perf_counter(), start

    def emit(step: int, device_metrics) -> None:
        # Fetched one step late: the device is already busy with the next step.
        values = {k: v.item() for k, v in jax.device_get(device_metrics).items()}
        if not values.pop("finite") and loop.nan_policy == "stop":
            raise FlaxlmError(f"non-finite loss or gradient at step {step} (train.nan_policy="
                              "stop); the update was not applied and checkpoints are clean")
        values.update(throughput.measure(step))
        log.write(step, values)
        last.update(values, step=step)
        bar.set_postfix(loss=f"{values['loss']:.3f}", acc=f"{values.get('accuracy', 0):.3f}",
                        tok_s=f"{values.get('tokens_per_sec', 0):.0f}")

    def run_eval(step: int) -> None:
        if eval_batches:
            values = evaluate(program, state["params"], mesh, eval_batches)
            log.write(step, values)
            last.update(values)
            throughput.measure(step)  # evaluation time is not training throughput

    pending = None
    try:
        with stop.installed():
            for step in range(start + 1, loop.steps + 1):
                state, metrics = program.train_step(state, host_batch_to_global(mesh, next(stream)))
                stop.poll(step)
                if pending is not None:
                    emit(*pending)
                    pending = None
                bar.update(1)
                if step % loop.log_every == 0 or step == loop.steps or stop.signal_name:
                    pending = (step, metrics)
                if loop.eval_every and step % loop.eval_every == 0 and step != loop.steps:
                    if pending is not None:
                        emit(*pending)
                        pending = None
                    run_eval(step)
                if step % loop.checkpoint_every == 0 or step == loop.steps or stop.signal_name:
                    checkpointer.save(step, state, meta(step))
                if stop.signal_name:
                    break
            if pending is not None:
                emit(*pending)
            if not stop.signal_name and start < loop.steps:
                run_eval(loop.steps)
        checkpointer.wait()
    finally:
        bar.close()
        checkpointer.close()
        log.close()
    if stop.signal_name and is_main:
        print(f"flaxlm: received {stop.signal_name}; checkpoint saved at step {last.get('step')}; "
              "run the same command to resume", flush=True)
    last["stopped_by"] = stop.signal_name
    return last

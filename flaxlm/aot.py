"""Ahead-of-time compilation of the real train step for a TPU topology, on a machine without TPUs.

`flaxlm compile` builds the same `TrainProgram` that `flaxlm train` runs, on compile-only TPU
devices that libtpu describes (`jax.experimental.topologies.get_topology_desc`), lowers its train
step with abstract arguments (ShapeDtypeStructs that carry the run's shardings; no array is ever
allocated) and compiles it with the TPU compiler. It reports:

* per-chip memory from `compiled.memory_analysis()`: arguments, outputs (the donated state aliases
  the arguments), temporaries, generated code, and the total: XLA's `peak_memory_in_bytes`, the
  peak of its buffer-liveness simulation, against the chip's HBM. The sum arguments + outputs -
  aliased + temporaries (MaxText's "total") is shown as an upper bound: XLA reuses donated
  argument buffers once they are dead, so the sum can exceed HBM for a program that XLA placed
  (xlmr-large on one v5e chip: sum 16.4 GiB, peak 13.9 GiB). A compile that fails with
  RESOURCE_EXHAUSTED is a "does not fit" result with the numbers XLA's error gives, not a crash.
* XLA's step-time estimate from `compiled.cost_analysis()`, which for TPU reports `flops`,
  `bytes accessed`, `transcendentals` and `optimal_seconds` for one chip's program. We use
  `optimal_seconds` when it is positive; for large programs libtpu 0.0.42 returns a negative
  value (seen for every MiniLM-sized step), and then the estimate is the roofline
  max(flops / bf16 peak, bytes accessed / HBM bandwidth) from the same analysis. The report
  says which. XLA counts a loop body once, so with gradient accumulation (a `lax.scan` over
  micro-batches) the step estimate is t + (accum - 1) · (t - t_update), where t_update is the
  estimate for the optimizer update alone (compiled separately with the same shardings).
* MFU at that step time, with flaxlm/flops.py's convention and bf16 peak per chip, counting every
  slot of the batch as real work (no data here; a real run's logged `mfu` counts real tokens).

Needs libtpu: `pip install 'flaxlm[tpu]'`. The vocabulary comes from the preset (or an explicit
`model.vocab_size`), so no tokenizer is needed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from flaxlm import experiment
# The report is re-exported: callers (cli, benchmarks) use `aot.format_report`, `aot.report_dict`.
from flaxlm.aot_report import CompileReport, GiB, format_report, report_dict  # noqa: F401
from flaxlm.errors import FlaxlmError
from flaxlm.flops import peak_flops_per_device
from flaxlm.models.heads import config_for_head
from flaxlm.objectives.registry import make_objective
from flaxlm.run.steps import TrainProgram
from flaxlm.run_config import RunConfig
from flaxlm.sharding import MeshConfig, data_parallel_size, make_mesh
from flaxlm.topology import Topology, parse_topology, topology_devices


def _shard_bytes(tree) -> int:
    return sum(
        math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(tree))


_SIZE = r"([\d.]+)\s*([KMGT]?)i?B?"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _oom_numbers(message: str) -> tuple[int | None, int | None]:
    """(temporaries, total) bytes from a TPU RESOURCE_EXHAUSTED message, where it states them."""
    def size(m, i):
        return int(float(m.group(i)) * _UNITS[m.group(i + 1)])

    temps = re.search(r"HLO temporaries \(" + _SIZE + r"\)", message)
    used = re.search(r"[Uu]sed " + _SIZE + r" of " + _SIZE, message)
    return (size(temps, 1) if temps else None), (size(used, 1) if used else None)


def _is_resource_exhausted(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text


def _update_cost(program: TrainProgram, abstract_state: dict) -> dict[str, float]:
    """XLA's estimate for the optimizer update alone, to scale a loop-body-once estimate."""
    shardings = program.state_shardings

    def update(params, opt_state, grads):
        grads = jax.tree.map(lambda g: g / 2.0, grads)  # the normalization the step does
        updates, opt_state = program.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, optax.global_norm(grads)

    compiled = jax.jit(
        update, in_shardings=(shardings["params"], shardings["opt_state"], shardings["params"]),
        out_shardings=(shardings["params"], shardings["opt_state"], None),
        donate_argnums=(0, 1)).lower(abstract_state["params"], abstract_state["opt_state"],
                                     abstract_state["params"]).compile()
    return _cost(compiled)


def _seconds(cost: dict[str, float], topo: Topology, peak_flops: float) -> tuple[float, str]:
    optimal = cost.get("optimal_seconds", 0.0)
    if optimal > 0 and math.isfinite(optimal):
        return optimal, "optimal_seconds"
    roofline = max(
        cost.get("flops", 0.0) / peak_flops if peak_flops else 0.0,
        cost.get("bytes accessed", 0.0) / topo.generation.hbm_bytes_per_second)
    return roofline, "roofline"


def _cost(compiled) -> dict[str, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per program
        cost = cost[0] if cost else {}
    return dict(cost or {})


def compile_train_step(config: RunConfig, topology: str | Topology,
                       mesh_config: MeshConfig | None = None) -> CompileReport:
    """Compile `config`'s train step for `topology` and report memory, time and MFU per chip."""
    topo = parse_topology(topology) if isinstance(topology, str) else topology
    devices = topology_devices(topo)
    # Shapes from the preset (as `init_from` checkpoints of that preset have), not a tokenizer.
    model_config, data, loop = config.model_config, config.data, config.loop
    if data.seq_len > model_config.max_seq_len:
        raise FlaxlmError(f"data.seq_len={data.seq_len} exceeds the model's "
                          f"{model_config.max_seq_len} positions")
    mesh = make_mesh(mesh_config or config.mesh, devices)
    accum = config.step.grad_accum_steps
    experiment.check_batch(mesh, loop.batch_size, accum)

    objective = make_objective(config.objective, config.objective_sections)
    model_config = config_for_head(objective.head, model_config)
    program = experiment.build_program(objective, model_config, config.optim, mesh, config.step)
    abstract_state, abstract_frozen = experiment.sharded_abstract(program)
    batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
    batch = {
        k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding)
        for k, s in objective.batch_spec(loop.batch_size, data).items()
    }
    # No data here: every slot of the batch counts (packed text is nearly all real tokens; the
    # MLM prediction slots carry ~20% headroom over the expected masked tokens).
    slot_counts = objective.real_counts({k: np.ones(s.shape, s.dtype) for k, s in batch.items()})

    kind = devices[0].device_kind
    report = CompileReport(
        topology=topo.name, libtpu_topology=topo.libtpu_name, device_kind=kind, chips=len(devices),
        hosts=topo.hosts, mesh=dict(mesh.shape), model_preset=config.model_preset,
        params=program.param_count(), batch_size=loop.batch_size, seq_len=data.seq_len,
        grad_accum_steps=accum, compute_dtype=program.compute_dtype,
        hbm_bytes=topo.generation.hbm_bytes, fits=False, model_flops_per_step=objective.train_flops(
            model_config, data.seq_len,
            slot_counts), peak_flops_per_chip=peak_flops_per_device(kind, "tpu"),
        remat=model_config.remat, attention=model_config.attention)

    lowered = program.jitted_train_step.lower(abstract_state, abstract_frozen, batch)
    try:
        compiled = lowered.compile()
    except Exception as e:  # noqa: BLE001 - only RESOURCE_EXHAUSTED is a result; the rest re-raises
        if not _is_resource_exhausted(e):
            raise
        message = str(e).strip().splitlines()[0]
        report.error = message
        report.argument_bytes = _shard_bytes((abstract_state, batch))
        report.temp_bytes, report.total_bytes = _oom_numbers(message)
        if report.total_bytes is None and report.temp_bytes is not None:
            report.total_bytes = report.argument_bytes + report.temp_bytes
        return report

    mem = compiled.memory_analysis()
    report.argument_bytes = int(mem.argument_size_in_bytes)
    report.output_bytes = int(mem.output_size_in_bytes)
    report.alias_bytes = int(mem.alias_size_in_bytes)
    report.temp_bytes = int(mem.temp_size_in_bytes)
    report.code_bytes = int(mem.generated_code_size_in_bytes)
    report.sum_bytes = (report.argument_bytes + report.output_bytes - report.alias_bytes +
                        report.temp_bytes)
    report.total_bytes = int(getattr(mem, "peak_memory_in_bytes", 0) or 0) or report.sum_bytes
    report.fits = report.total_bytes <= report.hbm_bytes

    cost = _cost(compiled)
    report.xla_optimal_seconds = cost.get("optimal_seconds")
    report.xla_flops_per_chip = cost.get("flops")
    report.xla_bytes_accessed_per_chip = cost.get("bytes accessed")
    seconds, report.step_time_source = _seconds(cost, topo, report.peak_flops_per_chip)
    if seconds and accum > 1:
        update = _update_cost(program, abstract_state)
        if report.step_time_source == "roofline":
            update.pop("optimal_seconds", None)  # measure both with the same yardstick
        report.xla_update_seconds, _ = _seconds(update, topo, report.peak_flops_per_chip)
        seconds = seconds + (accum - 1) * max(seconds - report.xla_update_seconds, 0.0)
    report.xla_step_seconds = seconds
    if seconds and report.peak_flops_per_chip:
        report.mfu = report.model_flops_per_step / (seconds * report.chips *
                                                    report.peak_flops_per_chip)
    return report


# Tried in this order when the config does not set model.remat: "full" (recomputation) is only
# tried when "none" cannot hold the whole per-chip batch in one micro-batch. A config that sets
# model.remat (e.g. dots_saveable) is searched with that policy alone.
FIT_REMATS = ("none", "full")


def fit_micro_batch(config: RunConfig, topology: str | Topology,
                    mesh_config: MeshConfig | None = None, remats=None,
                    log=print) -> tuple[CompileReport | None, list[CompileReport]]:
    """The largest per-chip micro-batch whose train step fits a chip's HBM, per remat policy.

    For each policy, micro-batch sizes that divide the per-chip batch (global batch / data-parallel
    chips) are searched (`largest_fitting`), each by one real compile; a size fits when XLA's peak
    memory is at most the chip's HBM; a later policy searches only sizes above the earlier ones'
    answer. The global batch is kept: the micro-batch sets `grad_accum_steps`.
    Returns (the fitting compile with the lowest estimated step time or None, every compile)."""
    topo = parse_topology(topology) if isinstance(topology, str) else topology
    mesh = make_mesh(mesh_config or config.mesh, topology_devices(topo))
    dp = data_parallel_size(mesh)
    if remats is None:
        chosen = config.model_overrides.get("remat")
        remats = (chosen, ) if chosen else FIT_REMATS
    if config.loop.batch_size % dp:
        raise FlaxlmError(f"train.batch_size={config.loop.batch_size} must be divisible by "
                          f"data-parallel size {dp}")
    per_chip = config.loop.batch_size // dp
    sizes = [m for m in range(1, per_chip + 1) if per_chip % m == 0]
    tried: list[CompileReport] = []
    best: CompileReport | None = None
    for remat in remats:

        def compile_with(micro: int) -> CompileReport:
            trial = dataclasses.replace(
                config, model_overrides={
                    **config.model_overrides, "remat": remat
                }, model_config=dataclasses.replace(config.model_config, remat=remat),
                step=dataclasses.replace(config.step, grad_accum_steps=per_chip // micro))
            report = compile_train_step(trial, topo, mesh_config)
            tried.append(report)
            step = f"{report.xla_step_seconds:.4g} s" if report.xla_step_seconds else "—"
            log(f"  fit: remat {remat}, micro-batch {micro}/chip (grad_accum_steps "
                f"{per_chip // micro}): {_fit_gib(report.total_bytes)} of "
                f"{topo.generation.hbm_bytes / GiB:.0f} GiB, {report.verdict}, est. step {step}")
            return report

        # A later policy only recomputes more: it can win only at a micro-batch the earlier
        # ones could not hold, so it searches the sizes above theirs.
        larger = [m for m in sizes if best is None or m > per_chip // best.grad_accum_steps]
        fitting = largest_fitting(larger, compile_with) if larger else None
        if fitting and (best is None or fitting.xla_step_seconds < best.xla_step_seconds):
            best = fitting
        if best and best.grad_accum_steps == 1:
            break  # more remat only adds recomputation
    return best, tried


def largest_fitting(sizes: list[int], compile_at):
    """`compile_at(size)`'s report for the largest of the ascending `sizes` that fits, or None,
    assuming memory grows with size. Largest first (when it fits, one compile). Then each compile
    settles one size between the largest known to fit and the smallest known not to: the largest
    size the reports so far predict to fit (`_predicted_peak`), or the midpoint when they carry
    no byte counts, until the two are neighbours. A prediction only picks the order: every
    answer is a compile's verdict, and the size above the answer was compiled and did not fit.
    A compile takes minutes, so the order matters: near-linear memory needs two or three."""
    reports: dict[int, Any] = {}
    fits_at, fails_at = -1, len(sizes)  # indices: the largest known to fit, the smallest not
    index = len(sizes) - 1
    while True:
        reports[index] = compile_at(sizes[index])
        if reports[index].fits:
            fits_at = index
        else:
            fails_at = index
        if fails_at - fits_at <= 1:
            return reports.get(fits_at)
        index = _next_size(sizes, fits_at, fails_at, reports)


def _next_size(sizes: list[int], fits_at: int, fails_at: int, reports: dict) -> int:
    """The index to compile next, strictly between `fits_at` and `fails_at`: the largest whose
    predicted peak fits (the smallest candidate if none is predicted to), or the midpoint when
    the reports carry no byte counts. The prediction is a line through the two compiles nearest
    the candidates: the bracketing pair, else the two smallest sizes that did not fit, else the
    one compile with its arguments (train state and batch shard) as the fixed part."""
    candidates = range(fits_at + 1, fails_at)
    if not all(getattr(r, "total_bytes", None) for r in reports.values()):
        return (fits_at + fails_at) // 2
    nearest = ([fits_at, fails_at] if fits_at >= 0 else sorted(i for i, r in reports.items()
                                                               if not r.fits)[:2])
    points = [(sizes[i], reports[i].total_bytes) for i in nearest]
    if len(points) == 1:
        first = reports[nearest[0]]
        points.insert(0, (0, min(first.argument_bytes or 0, first.total_bytes)))
    (s0, b0), (s1, b1) = points
    hbm = reports[fails_at].hbm_bytes
    predicted = [i for i in candidates if b0 + (b1 - b0) * (sizes[i] - s0) / (s1 - s0) <= hbm]
    return predicted[-1] if predicted else candidates[0]


def _fit_gib(n: int | None) -> str:
    return "? GiB" if n is None else f"{n / GiB:.2f} GiB"

"""The report of `flaxlm compile` (flaxlm/aot.py): per-chip memory against HBM, XLA's step-time
estimate and the implied MFU, as text for the terminal and as a dict for benchmark tables."""

from __future__ import annotations

import dataclasses

from flaxlm.topology import GiB


@dataclasses.dataclass
class CompileReport:
    topology: str
    libtpu_topology: str
    device_kind: str
    chips: int
    hosts: int
    mesh: dict[str, int]
    model_preset: str
    params: int
    batch_size: int
    seq_len: int
    grad_accum_steps: int
    compute_dtype: str
    hbm_bytes: int
    fits: bool
    # Per-chip bytes. From memory_analysis() after a successful compile; after a
    # RESOURCE_EXHAUSTED compile, arguments are counted from the shardings and temporaries (or the
    # total) come from XLA's error message when it states them (else None).
    argument_bytes: int | None = None
    output_bytes: int | None = None
    alias_bytes: int | None = None
    temp_bytes: int | None = None
    code_bytes: int | None = None
    total_bytes: int | None = None  # XLA's peak (else the sum below)
    sum_bytes: int | None = None  # arguments + outputs - aliased + temporaries: an upper bound
    error: str | None = None
    # XLA's estimate (per chip; the SPMD program runs on every chip at once).
    xla_step_seconds: float | None = None  # the estimate used, accumulation-corrected
    step_time_source: str = ""  # "optimal_seconds" or "roofline"
    xla_optimal_seconds: float | None = None  # as reported (loop body counted once)
    xla_update_seconds: float | None = None  # optimizer update alone (accumulation only)
    xla_flops_per_chip: float | None = None
    xla_bytes_accessed_per_chip: float | None = None
    model_flops_per_step: float = 0.0
    peak_flops_per_chip: float = 0.0
    mfu: float | None = None
    remat: str = "none"  # model.remat of the compiled step
    attention: str = "xla"  # model.attention of the compiled step

    @property
    def verdict(self) -> str:
        return "fits" if self.fits else "does not fit"


def _gib(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / GiB:.2f} GiB" if n >= GiB // 10 else f"{n / (1 << 20):.1f} MiB"


def format_report(r: CompileReport) -> str:
    mesh = " ".join(f"{k}={v}" for k, v in r.mesh.items())
    lines = [
        f"flaxlm compile: {r.topology} ({r.libtpu_topology}: {r.chips} × {r.device_kind}, "
        f"{r.hosts} host{'s' if r.hosts > 1 else ''}), mesh {mesh}",
        f"  model {r.model_preset}: {r.params:,} parameters; global batch {r.batch_size} × seq "
        f"{r.seq_len}, grad_accum_steps {r.grad_accum_steps}, compute {r.compute_dtype}, "
        f"attention {r.attention}, remat {r.remat}",
    ]
    hbm = f"{r.hbm_bytes / GiB:.0f} GiB HBM"
    if r.error is None:
        lines.append(
            f"  per-chip memory: arguments {_gib(r.argument_bytes)}, outputs {_gib(r.output_bytes)}"
            f" ({_gib(r.alias_bytes)} aliased to donated arguments), temporaries "
            f"{_gib(r.temp_bytes)}, code {_gib(r.code_bytes)}; total (XLA peak) "
            f"{_gib(r.total_bytes)} of {hbm}: {r.verdict} (arguments + outputs - aliased + "
            f"temporaries: {_gib(r.sum_bytes)})")
    else:
        total = "unknown" if r.total_bytes is None else f"at least {_gib(r.total_bytes)}"
        lines.append(f"  per-chip memory: arguments {_gib(r.argument_bytes)} (from the shardings), "
                     f"temporaries {_gib(r.temp_bytes)}, total {total} of {hbm}: {r.verdict}")
        lines.append(f"  XLA: {r.error}")
    if r.xla_step_seconds:
        if r.step_time_source == "optimal_seconds":
            how = "cost_analysis optimal_seconds"
        else:
            how = (f"roofline of cost_analysis flops and bytes accessed; XLA's optimal_seconds "
                   f"was {r.xla_optimal_seconds:.4g}")
        if r.grad_accum_steps > 1:
            how += (f"; accumulation loop body counted once by XLA, scaled to "
                    f"{r.grad_accum_steps} micro-batches, update alone "
                    f"{r.xla_update_seconds or 0:.3g} s")
        lines.append(f"  XLA estimated step time: {r.xla_step_seconds:.4g} s ({how}); XLA counts "
                     f"{(r.xla_flops_per_chip or 0) / 1e12:.3g} TFLOP and "
                     f"{(r.xla_bytes_accessed_per_chip or 0) / GiB:.3g} GiB accessed per chip")
    if r.mfu is not None:
        lines.append(
            f"  implied MFU {100 * r.mfu:.1f}% (every batch slot counted as real work): "
            f"{r.model_flops_per_step / 1e12:.4g} TFLOP/step "
            f"(the objective's train_flops in flaxlm/flops.py's convention, both ELECTRA towers "
            f"and a teacher's forward included) / step time / ({r.chips} × "
            f"{r.peak_flops_per_chip / 1e12:.0f} TFLOP/s bf16 peak)")
    lines.append(f"  verdict: {r.verdict} on {r.topology}")
    return "\n".join(lines)


def report_dict(r: CompileReport) -> dict:
    return dataclasses.asdict(r) | {"verdict": r.verdict}

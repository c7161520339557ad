"""What each case measures and how its rows and targets are derived from the workers' timings."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any, Callable

from benchmarks.common import Profile, median
from benchmarks.objectives import OBJECTIVES
from benchmarks.protocol import LocalWorker, ProcessWorker, WorkerError
from benchmarks.registry import Case, Row, Target, case, static_cases

HF_FLAX_REQUIREMENTS = ("transformers==4.57.*", "jax==0.10.2", "flax==0.12.8", "optax==0.2.8")
IMPL_NAMES = {
    "flaxlm-step": "flaxlm",
    "flaxlm-step-unpacked": "flaxlm, MLM head over every slot (unpacked)",
    "hf-torch-eager": "HF PyTorch eager",
    "hf-torch-compile": "HF PyTorch torch.compile",
    "hf-flax": "HF Flax (transformers 4.57)",
}


@dataclasses.dataclass
class Context:
    profile: Profile
    steps: int
    threads: int
    env: dict
    cache_dir: str
    hf_venv: str
    install_hf: bool
    log: Callable[[str], None]
    targets: list = dataclasses.field(default_factory=list)
    _hf_python: Any = None

    def spec(self, kind: str, **extra) -> dict:
        p = self.profile
        # `extra` may replace the profile's shapes (an objective's `sized_spec`).
        return {
            **dict(kind=kind, name=kind, model=p.model, batch=p.batch, seq=p.seq, warmup=p.warmup, threads=self.threads, cache_dir=self.cache_dir, tokenizer_vocab=p.tokenizer_vocab, tokenizer_lines=p.tokenizer_lines),
            **extra
        }

    def worker(self, spec: dict):
        self.log(f"  starting {spec['name']}")
        if spec["kind"] == "hf-flax":
            python, reason = self.hf_flax_python()
            if python is None:
                raise WorkerError(f"unavailable: {reason}")
            return ProcessWorker("benchmarks.hf_flax_worker", spec, python=python, env=self.env)
        if self.profile.in_process:
            from benchmarks.worker import build
            return LocalWorker(build, spec)
        return ProcessWorker("benchmarks.worker", spec, env=self.env)

    def hf_flax_python(self) -> tuple[str | None, str]:
        """The throwaway virtualenv's python for the HF Flax baseline, created if allowed."""
        if self._hf_python is None:
            self._hf_python = _hf_flax_venv(self.hf_venv, self.install_hf, self.log)
        return self._hf_python


def _hf_flax_venv(path: str, install: bool, log) -> tuple[str | None, str]:
    python = os.path.join(path, "bin", "python")
    probe = [
        python, "-c", "import transformers, flax; from transformers import "
        "FlaxBertForMaskedLM; assert transformers.__version__.startswith('4.57')"
    ]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python, ""
    if not install:
        return None, f"no transformers 4.57 + flax virtualenv at {path} (--no-install-hf)"
    log(f"  creating throwaway virtualenv {path}: pip install {' '.join(HF_FLAX_REQUIREMENTS)}")
    try:
        subprocess.run([sys.executable, "-m", "venv", path], check=True, capture_output=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *HF_FLAX_REQUIREMENTS], check=True,
                       capture_output=True, text=True, timeout=1200)
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or "").strip().splitlines()[-1:] or ["?"]
        return None, f"pip install failed: {tail[0][:120]}"
    except subprocess.TimeoutExpired:
        return None, "pip install timed out"
    if subprocess.run(probe, capture_output=True).returncode != 0:
        return None, "transformers 4.57 Flax classes do not import in the new virtualenv"
    return python, ""


def _arch(vocab: int) -> str:
    """The issue's pairing: BERT classes at BERT's vocabulary, XLM-R classes at XLM-R's."""
    return "xlmr" if vocab == 250_002 else "bert"


def _split(total: int, rounds: int) -> list[int]:
    rounds = max(1, min(rounds, total))
    base = [total // rounds] * rounds
    for i in range(total % rounds):
        base[i] += 1
    return base


def _fmt_rate(x: float, unit: str) -> str:
    return f"{x:,.0f} {unit}" if x >= 100 else f"{x:,.1f} {unit}"


# -- train step ----------------------------------------------------------------------------------
def run_step_case(ctx: Context, *, objective: str, vocab: int) -> list[Row]:
    """flaxlm's step against each baseline, interleaved pairwise: only flaxlm and one baseline
    are alive at a time (HF at 250k vocabulary needs several GB), and every baseline round sits
    next to a flaxlm round, so each speed-up is a ratio of neighbouring measurements."""
    obj = OBJECTIVES[objective]
    name = f"step.{objective}.v{vocab}"
    p = ctx.profile
    tokens = p.batch * p.seq
    common = dict(objective=objective, vocab=vocab, arch=_arch(vocab), **obj.worker_spec(p))
    main = ctx.worker(ctx.spec("flaxlm-step", **common))
    all_main, peaks, rows, speedups = [], [], [], {}
    try:
        baselines = [b for b in obj.baselines if b not in p.skip]
        for b in obj.baselines:
            if b in p.skip:
                rows.append(Row(name, IMPL_NAMES[b], note=f"skipped in the {p.name} profile"))
        for b in baselines:
            try:
                other = ctx.worker(ctx.spec(b, compile=b.endswith("compile"), **common))
            except WorkerError as e:
                rows.append(
                    Row(name, IMPL_NAMES[b], note=str(e).split(": ", 1)[-1][:160],
                        data={"error": str(e)}))
                continue
            ours, theirs = [], []
            try:
                for k in _split(ctx.steps, p.rounds):
                    ctx.log(f"  {name}: {k} steps flaxlm, {k} steps {b}")
                    ours += main.call("run", n=k)["times"]
                    # The matmul rate is sampled next to the steps it normalizes.
                    peaks.append(main.call("peak")["flops_per_s"])
                    theirs += other.call("run", n=k)["times"]
            except WorkerError as e:
                rows.append(Row(name, IMPL_NAMES[b], note=f"failed: {str(e)[:160]}"))
                continue
            finally:
                other.close()
            all_main += ours
            speedup = median(theirs) / median(ours)
            speedups[b] = speedup
            note = f"paired flaxlm median {median(ours):.3f} s"
            if b.startswith("flaxlm"):  # the same useful FLOPs: its MFU against the same peak
                rate = median(peaks) * other.info["device_count"]
                useful = other.info["useful_flops_per_step"] / median(theirs) / rate
                note += f"; useful-only MFU {useful:.0%}"
            rows.append(
                Row(
                    name, IMPL_NAMES[b], median(theirs), _fmt_rate(tokens / median(theirs),
                                                                   "tok/s"),
                    ratio=f"flaxlm {speedup:.2f}×", note=note, data={
                        "times": theirs,
                        "paired_flaxlm_times": ours,
                        "speedup": speedup,
                        "info": other.info
                    }))
        if not all_main:
            all_main = main.call("run", n=ctx.steps)["times"]
            peaks.append(main.call("peak")["flops_per_s"])
        info = main.info
        step = median(all_main)
        peak = median(peaks)
        mfu = info["flops_per_step"] / step / (peak * info["device_count"])
        useful = info["useful_flops_per_step"] / step / (peak * info["device_count"])
        packed = " packed" if info.get("pack_predictions") else ""
        rows.insert(
            0,
            Row(
                name, f"flaxlm {objective}{packed} ({info['compute_dtype']})", step,
                _fmt_rate(tokens / step, "tok/s"), share=f"MFU {mfu:.0%}",
                note=(f"{info['flops_per_step'] / 1e9:.0f} GFLOP/step; peak "
                      f"{peak / 1e9:.0f} GFLOP/s; useful-only MFU {useful:.0%}"), data={
                          "times": all_main,
                          "peaks": peaks,
                          "mfu": mfu,
                          "mfu_useful": useful,
                          "info": info
                      }))
        dtype = "float32" if info["platform"] == "cpu" else "bfloat16"
        rows.insert(
            1,
            Row(
                name, f"XLA matmul peak (jnp.dot, {dtype})", None, f"{peak / 1e9:,.0f} GFLOP/s",
                note=f"median of {len(peaks)} measurements between the rounds, "
                "same process and threads", data={"peaks": peaks}))
    finally:
        main.close()
    if p.name != "smoke":
        for b, goal in obj.speed_goals.get(vocab, {}).items():
            value = speedups.get(b)
            ctx.targets.append(
                Target(f"{name} speed-up vs {IMPL_NAMES[b]}", value, f"≥ {goal}×",
                       None if value is None else value >= goal))
        if obj.mfu_goal is not None:
            ctx.targets.append(
                Target(f"{name} MFU vs measured matmul peak", mfu, f"≥ {obj.mfu_goal:.0%}", mfu
                       >= obj.mfu_goal))
    return rows


# -- distillation --------------------------------------------------------------------------------
@case(
    "distill", "DistilBERT distillation step (frozen teacher's forward + student) vs the same "
    "student's MLM step")
def run_distill(ctx: Context) -> list[Row]:
    """What the teacher costs: the two steps in two workers, interleaved round by round (same
    model, batch, vocabulary and optimizer), MFU of each against one matmul peak; the
    distillation step's FLOPs count the teacher's forward (objective.train_flops)."""
    p = ctx.profile
    vocab = p.vocabs[0]
    tokens = p.batch * p.seq
    workers = {}
    times: dict[str, list[float]] = {"mlm": [], "distilbert": []}
    peaks = []
    try:
        for objective in times:
            workers[objective] = ctx.worker(
                ctx.spec("flaxlm-step", objective=objective, vocab=vocab, arch=_arch(vocab)))
        for k in _split(ctx.steps, p.rounds):
            for objective, worker in workers.items():
                ctx.log(f"  distill: {k} steps {objective}")
                times[objective] += worker.call("run", n=k)["times"]
            peaks.append(workers["mlm"].call("peak")["flops_per_s"])
    finally:
        for worker in workers.values():
            worker.close()
    peak = median(peaks)
    mlm_step = median(times["mlm"])
    rows = []
    for objective, label in (("mlm", "flaxlm MLM step, student alone"),
                             ("distilbert", "flaxlm DistilBERT step, teacher 2× deep")):
        info, step = workers[objective].info, median(times[objective])
        mfu = info["flops_per_step"] / step / (peak * info["device_count"])
        rows.append(
            Row(
                "distill", f"{label} ({info['compute_dtype']})", step,
                _fmt_rate(tokens / step, "tok/s"),
                ratio="" if objective == "mlm" else f"{step / mlm_step:.2f}× the MLM step",
                share=f"MFU {mfu:.0%}",
                note=(f"vocab {vocab:,}; {info['flops_per_step'] / 1e9:.3g} GFLOP/step; "
                      f"{info['params'] / 1e6:.1f}M trained params"), data={
                          "times": times[objective],
                          "peaks": peaks,
                          "mfu": mfu,
                          "info": info
                      }))
    return rows


# -- input pipeline ------------------------------------------------------------------------------
@case("pipeline", "masked batches/s: flaxlm tf.data WWM vs transformers' WWM collator")
def run_pipeline(ctx: Context) -> list[Row]:
    p = ctx.profile
    w = ctx.worker(ctx.spec("pipeline"))
    results = []
    try:
        for n in _split(p.pipeline_batches, 3):
            results.append(w.call("run", n=n))
    finally:
        w.close()
    tokens = p.batch * p.seq

    def rate(key):  # median over rounds of batches/s
        return median(r["n"] / r[key] for r in results)

    ours = rate("flaxlm")
    rows = [
        Row(
            "pipeline", "flaxlm tf.data (pack + dynamic WWM)", 1 / ours,
            f"{ours:,.0f} batch/s, {_fmt_rate(ours * tokens, 'tok/s')}",
            note=f"B={p.batch} L={p.seq}; tokenizing+packing at build: "
            f"{w.info['flaxlm_setup_s']:.1f} s (untimed)", data={
                "rounds": results,
                "info": w.info
            })
    ]
    best_hf = 0.0
    for rt in ("pt", "np"):
        r = rate(f"hf_{rt}")
        best_hf = max(best_hf, r)
        rows.append(
            Row("pipeline", f"HF DataCollatorForLanguageModeling(wwm, {rt})", 1 / r,
                f"{r:,.0f} batch/s, {_fmt_rate(r * tokens, 'tok/s')}",
                ratio=f"flaxlm {ours / r:.1f}×",
                note="pre-tokenized and packed, with offsets (untimed)"))
    if p.name != "smoke":
        ctx.targets.append(
            Target("pipeline throughput vs the faster HF collator", ours / best_hf, "≥ 10×",
                   ours / best_hf >= 10))
    return rows


@case("pipeline_step", "train step fed by the real pipeline vs by an in-memory batch")
def run_pipeline_step(ctx: Context) -> list[Row]:
    p = ctx.profile
    vocab = p.vocabs[0]
    w = ctx.worker(ctx.spec("pipeline-step", objective="mlm", vocab=vocab, arch=_arch(vocab)))
    times = {"synthetic": [], "real": []}
    try:
        for k in _split(ctx.steps * 2, max(2, p.rounds * 2)):
            for source in ("synthetic", "real"):
                times[source] += w.call("run", n=k, source=source)["times"]
    finally:
        w.close()
    tokens = p.batch * p.seq
    synth, real = median(times["synthetic"]), median(times["real"])
    rows = [
        Row("pipeline_step", "flaxlm step, in-memory synthetic batch", synth,
            _fmt_rate(tokens / synth, "tok/s"), note=f"vocab {vocab:,}; train.py loop",
            data={"times": times["synthetic"]}),
        Row("pipeline_step", "flaxlm step, real tf.data pipeline", real,
            _fmt_rate(tokens / real, "tok/s"), ratio=f"{real / synth:.3f}× synthetic",
            note="same compiled step, same process", data={"times": times["real"]}),
    ]
    if p.name != "smoke":
        ctx.targets.append(
            Target("step with real pipeline / synthetic", real / synth, "≤ 1.05×", real / synth
                   <= 1.05))
    return rows


# -- checkpointing -------------------------------------------------------------------------------
@case("checkpoint", "how long an async orbax save blocks the train loop")
def run_checkpoint(ctx: Context) -> list[Row]:
    p = ctx.profile
    vocab = p.vocabs[0]
    w = ctx.worker(ctx.spec("checkpoint", objective="mlm", vocab=vocab, arch=_arch(vocab)))
    results = []
    try:
        for _ in range(p.checkpoint_saves):
            results.append(w.call("run", steps_before=max(2, min(ctx.steps, 4))))
    finally:
        w.close()
    step = median(t for r in results for t in r["before"])
    blocking = median(r["blocking_s"] for r in results)
    overlap = [t for r in results for t in r["after"]]
    extra = sum(t - step for t in overlap) / len(results) if overlap else 0.0
    waits = median(r["final_wait_s"] for r in results)
    mb = w.info["state_bytes"] / 1e6
    rows = [
        Row(
            "checkpoint", "Checkpointer.save (async orbax)", blocking,
            f"{mb:,.0f} MB, {w.info['leaves']} arrays", share=f"{blocking / step:.1%} of a step",
            note=(
                f"step {step:.3f} s; background write slowed the {len(overlap) / len(results):.1f}"
                f" overlapping steps by {extra:.3f} s in all ({extra / step:.0%} of a step)" +
                (f"; then waited {waits:.2f} s" if waits > 0.01 else "") +
                f"; first save of the run blocked {w.info['first_save_blocking_s']:.2f} s"), data={
                    "rounds": results,
                    "step_s": step,
                    "extra_s": extra,
                    "info": w.info
                })
    ]
    if p.name != "smoke":
        ctx.targets.append(
            Target("async checkpoint save blocks", blocking / step, "< 5% of a step",
                   blocking / step < 0.05))
    return rows


def all_cases(profile) -> list[Case]:
    """Train-step cases are generated, one per (objective in `benchmarks.objectives.OBJECTIVES`
    with baselines, vocabulary in the profile or the objective's own): registering a new objective
    there adds its rows. Other cases (`distill`, which runs the `distilbert` objective) register
    themselves with `@case(...)` below."""
    generated = [
        Case(f"step.{obj.name}.v{vocab}",
             f"train step, {obj.description}, vocab {vocab:,} vs {', '.join(obj.baselines)}",
             run_step_case, {
                 "objective": obj.name,
                 "vocab": vocab
             }, obj.shapes(profile)) for obj in OBJECTIVES.values() if obj.baselines
        for vocab in obj.vocabs(profile)
    ]
    return generated + static_cases()

"""`python -m benchmarks.run`: flaxlm's benchmark suite (docs/benchmarks.md).

  python -m benchmarks.run                    the full suite (the issue's shapes, ~30 min on 2 cores)
  python -m benchmarks.run --quick            vocab 30,522 only, fewer steps
  python -m benchmarks.run --smoke            tiny shapes, 1–2 steps, in-process (CI, no timing claims)
  python -m benchmarks.run --only step.mlm.v30522 --steps 8
  python -m benchmarks.run --only step.mlm.v250002 --skip hf-flax    one case, one baseline less
  python -m benchmarks.run --list

Prints one table and the targets, and writes everything measured to
benchmarks/results/<profile>-<time>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time

from benchmarks.cases import Context, all_cases
from benchmarks.common import PROFILES, available_cpus, default_platform_env
from benchmarks.protocol import WorkerError
from benchmarks.registry import Case, Row, select
from flaxlm import jax_platform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="vocab 30,522 only, 5 timed steps")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny shapes, 1-2 steps, in-process, no HF Flax venv (CI)")
    ap.add_argument("--only", action="append", default=[],
                    help="case name, prefix or glob (repeatable; comma-separated)")
    ap.add_argument("--steps", type=int, default=0,
                    help="timed steps per implementation and comparison (default: profile's)")
    ap.add_argument(
        "--threads", type=int, default=0,
        help="intra-op threads for every framework (default: all cores this "
        "process may use)")
    ap.add_argument("--results-dir", default=os.path.join(REPO, "benchmarks", "results"))
    ap.add_argument("--no-results", action="store_true", help="do not write the JSON file")
    ap.add_argument("--cache-dir", default=os.path.join(REPO, "runs", "bench-cache"),
                    help="where the benchmark tokenizer is trained once and kept")
    ap.add_argument(
        "--hf-venv", default=os.environ.get("FLAXLM_BENCH_HF_VENV", "/tmp/hf457"),
        help="throwaway virtualenv with transformers 4.57 + flax for the HF Flax "
        "baseline")
    ap.add_argument("--no-install-hf", action="store_true",
                    help="do not create the HF Flax virtualenv if it is missing")
    ap.add_argument("--skip", action="append", default=[], metavar="KIND",
                    help="leave out this baseline worker kind, e.g. hf-flax (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def format_table(rows: list[Row]) -> str:
    header = ("case", "implementation", "median s", "throughput", "flaxlm vs", "MFU / share",
              "note")
    cells = [header] + [(r.case, r.impl, "" if r.time_s is None else f"{r.time_s:.4f}" if r.time_s
                         < 0.1 else f"{r.time_s:.3f}", r.throughput, r.ratio, r.share, r.note)
                        for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + f" | {c[-1]} |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    return "\n".join(lines)


def format_shapes(profile, cases: list[Case], threads: int, steps: int) -> str:
    """The header's shapes, those of the cases run: the profile's, unless every case replaces them
    (`--only step.electra`: SELECTRA-small's model and warm-up); cases at other shapes are named."""
    def shapes(c: Case | None) -> dict:
        return {
            "model": profile.model,
            "batch": profile.batch,
            "seq": profile.seq,
            "warmup": profile.warmup,
            **(c.shapes if c else {})
        }

    def sizes(s: dict) -> str:
        return f"model {s['model']}, batch {s['batch']} × seq {s['seq']}"

    base = shapes(cases[0] if cases and all(c.shapes for c in cases) else None)
    line = (f"{sizes(base)}, {threads} threads for XLA and torch alike (CPU affinity + "
            f"torch.set_num_threads), medians of {steps} timed steps after {base['warmup']} "
            "warm-up")
    for c in cases:
        s = shapes(c)
        if s != base:
            line += f"; {c.name}: {sizes(s)}, {s['warmup']} warm-up"
    return line


def format_targets(targets) -> str:
    lines = []
    for t in targets:
        mark = "n/a " if t.met is None else "MET " if t.met else "MISS"
        value = "—" if t.value is None else (
            f"{t.value:.1%}" if "%" in t.goal else f"{t.value:.2f}×")
        lines.append(f"  [{mark}] {t.name}: {value} (goal {t.goal})")
    return "\n".join(lines)


def machine_info(threads: int) -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = ()
    return {
        "host_cpus": os.cpu_count(),
        "usable_cpus": len(available_cpus()),
        "threads": threads,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "loadavg_at_start": load
    }


def main(argv=None) -> int:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    args = parse_args(argv)
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    profile = dataclasses.replace(profile, skip=profile.skip + tuple(args.skip))
    cases = all_cases(profile)
    if args.list:
        for c in cases:
            print(f"{c.name:24s} {c.description}")
        return 0
    cases = select(cases, [p for arg in args.only for p in arg.split(",") if p])
    threads = args.threads or len(available_cpus())
    steps = args.steps or profile.steps
    if steps < 5 and profile.name != "smoke":
        print(f"note: --steps {steps} < 5: medians of fewer than 5 steps", file=sys.stderr)
    log = (lambda msg: None) if args.quiet else (
        lambda msg: print(msg, file=sys.stderr, flush=True))
    env = {**default_platform_env(), "TF_CPP_MIN_LOG_LEVEL": "3", "TOKENIZERS_PARALLELISM": "false"}
    if profile.in_process:
        os.environ.update(env)
    ctx = Context(profile=profile, steps=steps, threads=threads, env=env, cache_dir=args.cache_dir,
                  hf_venv=args.hf_venv, install_hf=not args.no_install_hf, log=log)
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    info = machine_info(threads)
    log(f"benchmarks: profile {profile.name}, {threads} threads per framework, "
        f"{steps} timed steps, cases: {', '.join(c.name for c in cases)}")

    rows: list[Row] = []
    started = time.time()
    loads = {}
    for c in cases:
        log(f"[{c.name}] {c.description}")
        t = time.time()
        try:
            rows += c.run(ctx, **c.params)
        except WorkerError as e:
            rows.append(Row(c.name, "—", note=f"failed: {str(e)[:200]}"))
        # Other work on the machine shows here: ratios are paired, absolute times are not.
        loads[c.name] = os.getloadavg()
        log(f"[{c.name}] done in {time.time() - t:.0f} s (load average {loads[c.name][0]:.1f})")
    elapsed = time.time() - started

    print(f"\nflaxlm benchmarks ({profile.name}): {format_shapes(profile, cases, threads, steps)}")
    print(f"command: {command.strip()}")
    print(format_table(rows))
    if ctx.targets:
        print("\ntargets (ratios from this run):")
        print(format_targets(ctx.targets))
    print(f"\nFLOP convention (flaxlm/flops.py): 6·params·tokens for the encoder's matmuls, "
          f"+ attention 12·L·S·D per token, + the MLM head at the prediction slots it computes "
          f"(M per row, or the packed capacity); 'useful-only' counts the real masked tokens "
          f"instead. MFU is against the "
          f"matmul rate measured in the same process (jnp.dot, fp32 on CPU, bf16 elsewhere). "
          f"Total {elapsed:.0f} s.")

    if not args.no_results:
        os.makedirs(args.results_dir, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = os.path.join(args.results_dir, f"{profile.name}-{stamp}.json")
        record = {
            "command": command.strip(),
            "profile": dataclasses.asdict(profile),
            "steps": steps,
            "machine": info,
            "elapsed_s": elapsed,
            "loadavg_after_case": loads,
            "rows": [dataclasses.asdict(r) for r in rows],
            "targets": [dataclasses.asdict(t) for t in ctx.targets]
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, default=_json_default)
        print(f"results: {os.path.relpath(path, REPO)}")
    return 0


def _json_default(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


if __name__ == "__main__":
    sys.exit(main())

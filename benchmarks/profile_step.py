"""`python -m benchmarks.profile_step`: where a flaxlm train step spends its time.

Times jitted pieces of the same step on the same synthetic batch, interleaved round by round, so
machine load hits every piece alike. A part is `<piece>[_<variant>]`:
  pieces:   step (the real `TrainProgram.train_step`), grads (forward+backward,
            `_grads_and_sums`), forward (loss only), optimizer (clip + AdamW + apply on fixed
            gradients)
  variants: nodrop (dropout rates 0), exactslots (`--slots-exact` prediction slots per row
            instead of max_predictions(seq): what packing predictions per batch would save)
Differences between parts locate the backward, optimizer and dropout costs.
`--trace DIR` writes a jax.profiler trace of two full steps and prints the XLA ops it recorded
(on CPU only fusions emitted by XLA itself are recorded, not YNNPACK dots); `--hlo DIR` dumps the
optimized HLO.

  python -m benchmarks.profile_step --vocab 250002 --steps 3 --parts step,step_nodrop,forward
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks.common import MINILM_L6_H384, configure_threads, default_platform_env, median
from flaxlm import jax_platform


def main(argv=None) -> int:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_step")
    ap.add_argument("--vocab", type=int, default=30_522)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--parts", default="step,grads,forward,optimizer,step_nodrop")
    ap.add_argument("--trace", default="")
    ap.add_argument("--hlo", default="")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--slots-exact", type=int, default=19,
                    help="prediction slots per row for the exactslots variant")
    args = ap.parse_args(argv)
    os.environ.update(default_platform_env())
    if args.hlo:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_dump_to={args.hlo} --xla_dump_hlo_pass_re=^$")
    configure_threads(args.threads or len(os.sched_getaffinity(0)))

    import jax
    import numpy as np
    import optax

    from benchmarks.objectives import OBJECTIVES
    from benchmarks.runners.flaxlm_step import build_program
    from flaxlm.sharding import host_batch_to_global

    variants: dict = {}

    def variant(name: str):
        if name in variants:
            return variants[name]
        spec = dict(objective="mlm", arch="xlmr" if args.vocab == 250_002 else "bert",
                    vocab=args.vocab, model=MINILM_L6_H384, batch=args.batch, seq=args.seq,
                    dropout=name != "nodrop",
                    predictions=args.slots_exact if name == "exactslots" else 0)
        objective, batch_fn = OBJECTIVES["mlm"].make(spec)
        program, mesh, dtype = build_program(spec, objective)
        batch = host_batch_to_global(mesh, batch_fn(np.random.default_rng(0)))
        key = jax.random.fold_in(jax.random.key(0), 1)
        v = {
            "program": program,
            "batch": batch,
            "state": program.init_state(jax.random.key_data(jax.random.key(0))),
            "grads": jax.jit(lambda p, b: program._grads_and_sums(
                p, program.frozen, b, program.objective.normalizers(b), key)),
            "forward": jax.jit(lambda p, b: program.objective.loss(
                program.model(p), b, program.objective.normalizers(b), dtype=program.dtype,
                dropout_key=key if name != "nodrop" else None)),
            "optimizer": jax.jit(lambda s, g: _optimizer_tail(program, s, g, optax))
        }
        variants[name] = v
        return v

    def runner(part: str):
        piece, _, name = part.partition("_")
        v = variant(name or "base")
        if piece == "step":

            def fn():
                v["state"], m = v["program"].train_step(v["state"], v["batch"])
                m["loss"].block_until_ready()
        elif piece in ("grads", "forward"):

            def fn():
                jax.block_until_ready(v[piece](v["state"]["params"], v["batch"]))
        elif piece == "optimizer":
            if "fixed_grads" not in v:
                v["fixed_grads"] = jax.block_until_ready(v["grads"](v["state"]["params"],
                                                                    v["batch"])[0])

            def fn():
                jax.block_until_ready(v["optimizer"](v["state"], v["fixed_grads"]))
        else:
            raise SystemExit(f"unknown part {part!r}")
        return fn

    parts = args.parts.split(",")
    fns = {p: runner(p) for p in parts}
    for p, fn in fns.items():  # compile + warm up
        t = time.perf_counter()
        fn()
        fn()
        print(f"# {p}: first two calls {time.perf_counter() - t:.1f} s", file=sys.stderr)
    times = {p: [] for p in parts}
    for _ in range(args.steps):
        for p, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[p].append(time.perf_counter() - t)
    print(f"vocab {args.vocab}, batch {args.batch} × seq {args.seq}, medians of {args.steps} "
          f"interleaved rounds:")
    for p in parts:
        print(f"  {p:14s} {median(times[p]):.3f} s   {['%.3f' % t for t in times[p]]}")
    if args.trace:
        jax.profiler.start_trace(args.trace)
        for _ in range(2):
            fns[parts[0]]()
        jax.profiler.stop_trace()
        ops = op_breakdown(args.trace)
        total = sum(t for _, t, _ in ops)
        print(f"trace under {args.trace}; recorded XLA ops, CPU time summed over threads, per "
              f"step ({total / 2e3:.0f} ms recorded):")
        for name, t, count in ops[:args.top]:
            print(f"  {t / 2e3:9.1f} ms  {t / total:6.1%}  {count / 2:6.0f}×  {name}")
    return 0


def _optimizer_tail(program, state, grads, optax):
    updates, opt_state = program.optimizer.update(grads, state["opt_state"], state["params"])
    return optax.apply_updates(state["params"], updates), opt_state


def op_breakdown(trace_dir: str) -> list[tuple[str, float, int]]:
    """(op name, total µs, count) from a jax.profiler trace, largest first.

    Reads the XPlane protobuf with TensorFlow's copy of the schema (tensorflow-cpu is a flaxlm
    dependency), so no xprof install is needed. Counts leaf spans on XLA's threads only.
    """
    import collections
    import glob

    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals: dict = collections.defaultdict(float)
    counts: dict = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if "python" in line.name.lower():
                continue
            # Zero-length markers ("end: fusion.3") carry no time and would hide their op.
            events = sorted((e for e in line.events if e.duration_ps > 0),
                            key=lambda e: e.offset_ps)
            for i, e in enumerate(events):
                end = e.offset_ps + e.duration_ps
                if i + 1 < len(events) and events[i + 1].offset_ps < end:
                    continue  # a parent span: only leaves count
                name = names.get(e.metadata_id, "?")
                if name.startswith(("ThunkExecutor", "Slinky", "end: ")):
                    continue
                totals[name] += e.duration_ps / 1e6
                counts[name] += 1
    return sorted(((n, t, counts[n]) for n, t in totals.items()), key=lambda x: -x[1])


if __name__ == "__main__":
    sys.exit(main())

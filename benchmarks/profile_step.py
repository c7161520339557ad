"""`python -m benchmarks.profile_step`: where a flaxlm train step spends its time.

Times jitted pieces of the same step on the same synthetic batch, interleaved round by round:
the full step, forward+backward alone (`_grads_and_sums`), the forward alone, and the same three
without dropout. The differences locate the optimizer, backward and dropout costs. `--trace DIR`
also writes a jax.profiler trace of the full step (open with xprof / TensorBoard), and
`--hlo DIR` the optimized HLO of the step (per-fusion view of what XLA built).

  python -m benchmarks.profile_step --vocab 30522 --steps 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks.common import MINILM_L6_H384, configure_threads, default_platform_env, median


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_step")
    ap.add_argument("--vocab", type=int, default=30_522)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--parts", default="step,grads,forward,step_nodrop,grads_nodrop,optimizer")
    ap.add_argument("--trace", default="")
    ap.add_argument("--hlo", default="")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    os.environ.update(default_platform_env())
    if args.hlo:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_dump_to={args.hlo} --xla_dump_hlo_pass_re=^$")
    configure_threads(args.threads or len(os.sched_getaffinity(0)))

    import jax
    import numpy as np

    from benchmarks.runners.shared import program_for
    from flaxlm.sharding import host_batch_to_global

    def build(dropout: bool):
        spec = dict(objective="mlm", arch="xlmr" if args.vocab == 250_002 else "bert",
                    vocab=args.vocab, model=MINILM_L6_H384, batch=args.batch, seq=args.seq,
                    dropout=dropout)
        program, mesh, dtype, batch_fn = program_for(spec)
        batch = host_batch_to_global(mesh, batch_fn(np.random.default_rng(0)))
        state = program.init_state(jax.random.key_data(jax.random.key(0)))
        key = jax.random.fold_in(jax.random.key(0), 1)

        def grads(params, b):
            return program._grads_and_sums(params, b, key)

        def forward(params, b):
            return program.objective.loss_sums(program.model(params), b, dtype=program.dtype,
                                               dropout_key=key if dropout else None)

        def optimizer(state, g):  # the step's tail, on fixed gradients
            import optax
            updates, opt_state = program.optimizer.update(g, state["opt_state"], state["params"])
            return optax.apply_updates(state["params"], updates), opt_state
        return program, batch, state, jax.jit(grads), jax.jit(forward), jax.jit(optimizer)

    parts = args.parts.split(",")
    with_drop = build(True)
    no_drop = build(False) if any(p.endswith("_nodrop") for p in parts) else None
    holder = {"drop": with_drop[2], "nodrop": no_drop[2] if no_drop else None}
    fixed_grads = jax.block_until_ready(with_drop[3](with_drop[2]["params"], with_drop[1])[0])

    def runner(part):
        variant = no_drop if part.endswith("_nodrop") else with_drop
        program, batch, _, grads, forward, optimizer = variant
        slot = "nodrop" if part.endswith("_nodrop") else "drop"
        base = part.removesuffix("_nodrop")
        if base == "step":
            def fn():
                holder[slot], m = program.train_step(holder[slot], batch)
                m["loss"].block_until_ready()
        elif base == "grads":
            def fn():
                jax.block_until_ready(grads(holder[slot]["params"], batch))
        elif base == "forward":
            def fn():
                jax.block_until_ready(forward(holder[slot]["params"], batch))
        elif base == "optimizer":
            def fn():
                jax.block_until_ready(optimizer(holder[slot], fixed_grads))
        else:
            raise SystemExit(f"unknown part {part}")
        return fn

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
    print(f"vocab {args.vocab}, batch {args.batch} × seq {args.seq}, medians of {args.steps}:")
    for p in parts:
        print(f"  {p:14s} {median(times[p]):.3f} s   {['%.3f' % t for t in times[p]]}")
    if args.trace:
        jax.profiler.start_trace(args.trace)
        for _ in range(2):
            fns["step"]()
        jax.profiler.stop_trace()
        ops = op_breakdown(args.trace)
        total = sum(t for _, t, _ in ops)
        print(f"trace written under {args.trace}; XLA ops, CPU time over all threads per step "
              f"({total / 2e3:.0f} ms in all):")
        for name, t, count in ops[:args.top]:
            print(f"  {t / 2e3:9.1f} ms  {t / total:6.1%}  {count / 2:6.0f}×  {name}")
        by_kind: dict = {}
        for name, t, _ in ops:
            kind = name.rstrip("0123456789").rstrip(".")
            by_kind[kind] = by_kind.get(kind, 0.0) + t
        print("  by op kind:")
        for kind, t in sorted(by_kind.items(), key=lambda x: -x[1])[:15]:
            print(f"  {t / 2e3:9.1f} ms  {t / total:6.1%}  {kind}")
    return 0


def op_breakdown(trace_dir: str) -> list[tuple[str, float, int]]:
    """(event name, total µs, count) from a jax.profiler trace, largest first.

    Reads the XPlane protobuf with TensorFlow's copy of the schema (tensorflow-cpu is a flaxlm
    dependency), so no xprof install is needed. Only leaf events on XLA's executor threads count,
    so nested events are not double-counted.
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
            # Zero-length markers ("end: fusion.3") carry no time and would hide their op.
            events = sorted((e for e in line.events if e.duration_ps > 0),
                            key=lambda e: e.offset_ps)
            for i, e in enumerate(events):
                end = e.offset_ps + e.duration_ps
                # Skip an event that contains the next one (a parent span): leaves only.
                if i + 1 < len(events) and events[i + 1].offset_ps < end:
                    continue
                name = names.get(e.metadata_id, "?")
                totals[(plane.name, line.name, name)] += e.duration_ps / 1e6
                counts[(plane.name, line.name, name)] += 1
    merged: dict = collections.defaultdict(float)
    merged_counts: dict = collections.Counter()
    for (plane, line, name), us in totals.items():
        if "python" in line.lower() or name.startswith(("ThunkExecutor", "Slinky")):
            continue
        merged[name] += us
        merged_counts[name] += counts[(plane, line, name)]
    return sorted(((n, t, merged_counts[n]) for n, t in merged.items()), key=lambda x: -x[1])


if __name__ == "__main__":
    sys.exit(main())

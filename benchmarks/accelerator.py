"""`python -m benchmarks.accelerator`: flaxlm's pre-training steps on whatever device JAX finds,
next to a transformers PyTorch loop on the same device, in one command (a few minutes on a GPU).

  python -m benchmarks.accelerator              the shapes below (GPU, TPU; hours on 2 CPU cores)
  python -m benchmarks.accelerator --tiny       tiny shapes, one step each, in-process (CPU smoke)
  python -m benchmarks.accelerator --only electra --steps 20

Steps (seq 512): MLM on MiniLM-L12-H384 at vocabulary 250,002 (XLM-R's) and 14,610 (FLARE's
pruned one); ELECTRA at SELECTRA-small's shapes (generator + 50 × discriminator, vocab 50,000);
DistilmBERT's MLM step (6 × 768, vocab 119,547). flaxlm computes in bf16 on an accelerator (fp32
master weights, optimizer, logits and loss; fp32 on CPU) with fused attention:
`model.attention=splash` on TPU, `dot_product` elsewhere (cuDNN flash attention on GPU). PyTorch runs the same model from `transformers` under bf16
autocast on CUDA, SDPA attention and `torch.compile` (eager with --tiny), same AdamW and clipping.
Attention dropout is 0 on both sides (a fused kernel cannot drop attention probabilities);
hidden dropout stays 0.1.

tokens/s counts real tokens (the batches are packed: every slot is text). Useful MFU = FLOPs of
the real work (flaxlm/flops.py's convention: 6 × body parameters per token, attention, the MLM
head at real predictions only) / step time / the device's *measured* matmul rate (bf16 `jnp.dot`
of 8192², fp32 4096² on CPU), sampled between rounds. PyTorch's rows use the same FLOP count for
the same batch, so their MFU says how much of the device the same work got. The two sides run in
separate processes, alternating round by round.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from benchmarks.common import default_platform_env, median
from benchmarks.protocol import LocalWorker, ProcessWorker, WorkerError
from flaxlm import jax_platform

MINILM_L12_H384 = dict(hidden=384, layers=12, heads=12, ffn=1536)
SELECTRA_SMALL = dict(hidden=256, layers=12, heads=4, ffn=1024, embedding=256)
DISTILMBERT = dict(hidden=768, layers=6, heads=12, ffn=3072)
TINY = dict(hidden=64, layers=2, heads=4, ffn=128)


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    objective: str
    arch: str
    model: dict
    vocab: int
    batch: int  # sequences per step on an accelerator
    extra: tuple = ()  # more spec entries

    def spec(self, kind: str, tiny: bool, threads: int) -> dict:
        shapes = (dict(model=TINY, vocab=min(
            self.vocab, 1000), batch=8, seq=32, warmup=0) if tiny else dict(
                model=self.model, vocab=self.vocab, batch=self.batch, seq=512, warmup=2))
        return dict(kind=kind, name=f"{self.name} {kind}", objective=self.objective, arch=self.arch,
                    threads=threads, attention="fused", attention_dropout=0.0,
                    compile=kind == "hf-torch-compile", **shapes, **dict(self.extra))


STEPS = (
    Step("mlm-minilm-l12-v250002", "mlm", "xlmr", MINILM_L12_H384, 250_002, 32),
    Step("mlm-minilm-l12-v14610", "mlm", "xlmr", MINILM_L12_H384, 14_610, 32),
    Step("electra-small", "electra", "bert", SELECTRA_SMALL, 50_000, 32,
         (("generator_hidden_fraction", 0.25), )),
    Step("distilmbert-mlm", "mlm", "distilbert", DISTILMBERT, 119_547, 16),
)


def _worker(spec: dict, in_process: bool, env: dict):
    if in_process:
        from benchmarks.worker import build
        return LocalWorker(build, spec)
    return ProcessWorker("benchmarks.worker", spec, env=env)


def run_step(step: Step, args, env: dict, log) -> list[dict]:
    threads = args.threads or len(os.sched_getaffinity(0))
    flax = _worker(step.spec("flaxlm-step", args.tiny, threads), args.tiny, env)
    rows = []
    try:
        info = flax.info
        torch_kind = "hf-torch-eager" if args.tiny else "hf-torch-compile"
        torch, why = None, ""
        if info["platform"] == "tpu":
            why = "no PyTorch on TPU here"
        elif not args.no_torch:
            try:
                torch = _worker(step.spec(torch_kind, args.tiny, threads), args.tiny, env)
                if info["platform"] == "gpu" and torch.info.get("device") != "cuda":
                    why, torch = "PyTorch sees no CUDA device", torch.close()
            except WorkerError as e:
                why = f"failed: {str(e)[:160]}"
        ours, theirs, peaks = [], [], []
        rounds = max(1, min(args.rounds, args.steps))
        for r in range(rounds):
            n = args.steps // rounds + (r < args.steps % rounds)
            log(f"  {step.name}: {n} steps flaxlm" + (f", {n} steps {torch_kind}" if torch else ""))
            ours += flax.call("run", n=n)["times"]
            peaks.append(flax.call("peak")["flops_per_s"])
            if torch:
                theirs += torch.call("run", n=n)["times"]
        peak = median(peaks)
        tokens = info["tokens_per_step"]
        useful = info["useful_flops_per_step"]
        device = f"{info['device_count']} × {info['device_kind']} ({info['platform']})"
        for impl, times, extra in ((
                f"flaxlm ({info['compute_dtype']}, attention {info['attention']})", ours, info),
                                   (f"transformers {torch_kind[3:]} (bf16 autocast on CUDA, SDPA)",
                                    theirs, torch.info if torch else {})):
            if not times:
                rows.append(dict(step=step.name, impl=impl, note=why or "not run"))
                continue
            seconds = median(times)
            rows.append(
                dict(step=step.name, impl=impl, device=device, median_s=seconds,
                     tokens_per_s=tokens / seconds,
                     useful_mfu=useful / seconds / (peak * info["device_count"]),
                     peak_flops_per_s=peak, times=times, info=extra))
        if theirs:
            rows[0]["vs_torch"] = median(theirs) / median(ours)
    finally:
        flax.close()
        if torch:
            torch.close()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| step | implementation | median s | tokens/s | useful MFU | flaxlm vs torch |",
        "|---|---|---|---|---|---|"
    ]
    for r in rows:
        if "median_s" not in r:
            lines.append(f"| {r['step']} | {r['impl']} | — | — | — | {r['note']} |")
            continue
        vs = f"{r['vs_torch']:.2f}×" if "vs_torch" in r else ""
        lines.append(f"| {r['step']} | {r['impl']} | {r['median_s']:.4f} | "
                     f"{r['tokens_per_s']:,.0f} | {100 * r['useful_mfu']:.1f}% | {vs} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    ap = argparse.ArgumentParser(prog="python -m benchmarks.accelerator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true",
                    help="tiny shapes, 1 step, in-process, torch eager (a CPU smoke test)")
    ap.add_argument("--only", default="", help="steps whose name contains this")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per side (default 10; 1 "
                    "with --tiny)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: all)")
    ap.add_argument("--no-torch", action="store_true", help="flaxlm only")
    ap.add_argument("--out", default="", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    args.steps = args.steps or (1 if args.tiny else 10)
    selected = [s for s in STEPS if args.only in s.name]
    if not selected:
        raise SystemExit(f"--only {args.only!r}: no step matches; known: "
                         f"{', '.join(s.name for s in STEPS)}")
    # Both processes share one GPU: JAX must not take 75% of its memory up front.
    env = {
        **default_platform_env(), "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "TF_CPP_MIN_LOG_LEVEL": "3"
    }
    if args.tiny:
        os.environ.update(env)

    def log(line):
        print(line, file=sys.stderr, flush=True)

    rows = []
    for step in selected:
        log(f"== {step.name}")
        rows += run_step(step, args, env, log)
    device = next((r["device"] for r in rows if "device" in r), "?")
    peak = median([r["peak_flops_per_s"] for r in rows if "median_s" in r])
    shapes = "TINY shapes (a smoke run, no timing claims)" if args.tiny else "seq 512"
    print(f"benchmarks.accelerator on {device}; {shapes}, {args.steps} "
          f"timed steps per side in {min(args.rounds, args.steps)} interleaved rounds; measured "
          f"matmul rate {peak / 1e12:.3g} TFLOP/s")
    print(table(rows))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fault injection for docs/reliability.md: kill -9 and SIGTERM at random moments, then compare.

A reference run trains uninterrupted. A second workdir is driven to the same step count while
being killed repeatedly at random moments (checkpointing every step, so many kills land inside a
checkpoint write); each restart resumes on its own. At the end every logged loss and every final
parameter must equal the reference bit for bit. Prints one markdown table row per fault.

  JAX_PLATFORMS=cpu .venv/bin/python -m benchmarks.fault_injection --kills 12 --sigterms 3
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, tokenizer, corpus, steps):
    return [
        sys.executable, "-m", "flaxlm.cli", "train", "--config",
        os.path.join(REPO, "configs", "tiny.py"), "--workdir", workdir, "--no-progress",
        f"--config.data.tokenizer={tokenizer}", f"--config.data.train_files={corpus}",
        "--config.data.eval_files=", "--config.data.seq_len=64", "--config.train.batch_size=32",
        f"--config.train.steps={steps}", "--config.train.log_every=1",
        "--config.train.checkpoint_every=1", "--config.train.keep_checkpoints=2"
    ]


def losses(workdir):
    from flaxlm.run.workdir import Workdir
    return {m["step"]: m["loss"] for m in Workdir(workdir).read_metrics() if "loss" in m}


def last_checkpoint(workdir):
    from flaxlm.run.workdir import Workdir
    ckpt = Workdir(workdir).checkpoints_dir
    steps = [int(d) for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []
    return max(steps, default=0)


def run_with_faults(cmd, workdir, sig, faults, steps, rng):
    """Start/kill until `faults` signals were delivered mid-run, then let the run finish."""
    delivered, steps_lost, exits = 0, 0, []
    while True:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if delivered < faults:
            start = max(losses(workdir), default=0)
            # Wait until this process has trained a step, then strike at a random moment.
            while proc.poll() is None and max(losses(workdir), default=0) <= start:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                logged = max(losses(workdir), default=0)
                proc.send_signal(sig)
                out, _ = proc.communicate()
                delivered += 1
                exits.append(proc.returncode)
                steps_lost += max(0, logged - last_checkpoint(workdir))
                continue
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"resume failed:\n{out}")
        if max(losses(workdir), default=0) >= steps:
            return delivered, steps_lost, exits


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--sigterms", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    from flaxlm.run.checkpoint import read_params
    from flaxlm.data.tokenizers import train_tokenizer
    import jax

    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="flaxlm-faults-")
    with open(os.path.join(REPO, "data", "it", "train.txt"), encoding="utf-8") as f:
        lines = f.read().split("\n")[:2000]
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    tokenizer = os.path.join(tmp, "tok")
    train_tokenizer([corpus], vocab_size=2000, kind="unigram", out_dir=tokenizer)

    reference = os.path.join(tmp, "reference")
    subprocess.run(command(reference, tokenizer, corpus, args.steps), check=True,
                   capture_output=True)
    ref_params, _, _ = read_params(reference)
    ref_losses = losses(reference)

    print("| fault | injected | runs survived | steps lost (recomputed) | data lost | "
          "bitwise equal to uninterrupted |")
    print("|---|---|---|---|---|---|")
    for name, sig, count in (("kill -9 at random moments (checkpoint every step)", signal.SIGKILL,
                              args.kills), ("SIGTERM at random moments", signal.SIGTERM,
                                            args.sigterms)):
        workdir = os.path.join(tmp, f"faulty-{sig}")
        delivered, lost, exits = run_with_faults(command(workdir, tokenizer, corpus, args.steps),
                                                 workdir, sig, count, args.steps, rng)
        params, _, _ = read_params(workdir)
        same_params = all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)))
        got = losses(workdir)
        same_losses = [got[s]
                       for s in sorted(ref_losses)] == [ref_losses[s] for s in sorted(ref_losses)]
        clean_exits = sum(1 for e in exits if e == 0)
        extra = f" ({clean_exits} exited 0)" if sig == signal.SIGTERM else ""
        print(
            f"| {name} | {delivered}{extra} | {delivered}/{delivered} | {lost} | "
            f"{'0' if same_params and same_losses else 'MISMATCH'} | "
            f"params {'yes' if same_params else 'NO'}, losses {'yes' if same_losses else 'NO'} |",
            flush=True)


if __name__ == "__main__":
    main()

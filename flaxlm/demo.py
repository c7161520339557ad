"""`make demo`: tokenizer → MLM pre-training → held-out accuracy against a baseline.

Everything runs on the Italian sample shipped in data/it; the workdir is kept, so running the demo
again resumes (and finishes at once if the run is complete).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time

from flaxlm.errors import FlaxlmError

# TensorFlow only runs the input pipeline here; its C++ start-up chatter is not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.py")


def most_frequent_token_accuracy(eval_batches: list[dict]) -> float:
    """Accuracy of always predicting the commonest masked label: the floor any model must beat."""
    counts = collections.Counter()
    total = 0
    for batch in eval_batches:
        keep = batch["masked_weights"] > 0
        counts.update(batch["masked_labels"][keep].tolist())
        total += int(keep.sum())
    return counts.most_common(1)[0][1] / total if total else 0.0


def run(workdir: str, steps: int | None = None) -> dict:
    from flaxlm import run_config
    from flaxlm.data.pipeline import build_eval_batches
    from flaxlm.data.tokenizers import load_tokenizer, train_tokenizer
    from flaxlm.train import train

    os.chdir(REPO)  # the demo config names data files relative to the repository
    tokenizer_dir = os.path.join(workdir, "tokenizer-trained")
    if not os.path.exists(os.path.join(tokenizer_dir, "flaxlm_tokenizer.json")):
        print("flaxlm demo: training an 8k unigram SentencePiece tokenizer on data/it/train.txt")
        t0 = time.time()
        train_tokenizer(["data/it/train.txt"], vocab_size=8000, kind="unigram",
                        out_dir=tokenizer_dir)
        print(f"flaxlm demo: tokenizer ready in {time.time() - t0:.0f}s")
    overrides = [f"--config.data.tokenizer={tokenizer_dir}"]
    if steps:
        overrides.append(f"--config.train.steps={steps}")
    config = run_config.load(DEMO_CONFIG, overrides)

    t0 = time.time()
    result = train(config, workdir)
    minutes = (time.time() - t0) / 60

    tokenizer = load_tokenizer(tokenizer_dir)
    baseline = most_frequent_token_accuracy(
        build_eval_batches(config.data.__class__(**{**config.data.__dict__,
                                                     "tokenizer": tokenizer_dir}),
                           tokenizer, host_batch_size=config.loop.batch_size, seed=config.seed))
    print()
    print(f"flaxlm demo: trained {result.get('step')} steps in {minutes:.1f} min")
    if "eval_accuracy" in result:
        print(f"flaxlm demo: held-out MLM accuracy {result['eval_accuracy']:.3f} "
              f"(loss {result['eval_loss']:.3f}) vs most-frequent-token baseline {baseline:.3f}")
    print(f"flaxlm demo: checkpoints in {os.path.join(workdir, 'checkpoints')}, metrics in "
          f"{os.path.join(workdir, 'metrics.jsonl')}")
    return {**result, "baseline_accuracy": baseline}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        run(os.path.abspath(args.workdir), args.steps)
    except FlaxlmError as e:
        print(f"flaxlm: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

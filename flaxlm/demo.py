"""`make demo`: tokenizer → MLM pre-training → held-out accuracy against a baseline.

Everything runs on the Italian sample shipped in data/it; the workdir is kept, so running the demo
again resumes (and finishes at once if the run is complete).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
import time

from flaxlm.errors import FlaxlmError

# TensorFlow only runs the input pipeline here; its C++ start-up chatter is not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.py")
FILL_MASK_SENTENCES = [
    "Il file di configurazione si trova nella directory <mask>.",
    "Per installare un pacchetto usare il comando <mask>.",
    "Il sistema <mask> è una piattaforma molto potente.",
]


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
    from flaxlm.objectives.base import DataContext
    from flaxlm.objectives.registry import make_objective
    from flaxlm.data.tokenizers import load_tokenizer, train_tokenizer
    from flaxlm.convert.export import export
    from flaxlm.convert.fill_mask import fill_mask_demo, format_predictions
    from flaxlm.plots import plot_curves
    from flaxlm.train import train

    os.chdir(REPO)  # the demo config names data files relative to the repository
    tokenizer_dir = os.path.join(workdir, "tokenizer-trained")
    if not os.path.exists(os.path.join(tokenizer_dir, "flaxlm_tokenizer.json")):
        print("flaxlm demo: training a 4k unigram SentencePiece tokenizer on data/it/train.txt")
        t0 = time.time()
        train_tokenizer(["data/it/train.txt"], vocab_size=4000, kind="unigram",
                        out_dir=tokenizer_dir)
        print(f"flaxlm demo: tokenizer ready in {time.time() - t0:.0f}s")
    overrides = [f"--config.data.tokenizer={tokenizer_dir}"]
    if steps:
        overrides.append(f"--config.train.steps={steps}")
    config = run_config.load(DEMO_CONFIG, overrides)

    t0 = time.time()
    result = train(config, workdir)
    minutes = (time.time() - t0) / 60

    # The same held-out batches the run evaluated on, masked by the run's own objective.
    objective = make_objective(config.objective, config.objective_sections)
    baseline = most_frequent_token_accuracy(objective.eval_batches(DataContext(
        dataclasses.replace(config.data, tokenizer=tokenizer_dir), load_tokenizer(tokenizer_dir),
        config.seed, config.loop.batch_size)))
    print()
    print(f"flaxlm demo: trained {result.get('step')} steps in {minutes:.1f} min")
    if "eval_accuracy" in result:
        print(f"flaxlm demo: held-out MLM accuracy {result['eval_accuracy']:.3f} "
              f"(loss {result['eval_loss']:.3f}) vs most-frequent-token baseline {baseline:.3f}")
    curves = plot_curves(workdir)
    if curves:
        print(f"flaxlm demo: training curves in {curves}")
    print(f"flaxlm demo: checkpoints in {os.path.join(workdir, 'checkpoints')}, metrics in "
          f"{os.path.join(workdir, 'metrics.jsonl')}")

    # The release: a transformers bundle, proven by logit parity, then queried like any HF model.
    hf_dir = os.path.join(workdir, "hf")
    exported = export(workdir, hf_dir, overwrite=True)
    worst = max(v for k, v in exported.items() if k.endswith("diff"))
    print(f"flaxlm demo: exported to {hf_dir} ({exported['hf_class']}); max |Δ| logits vs "
          f"PyTorch transformers {worst:.1e}")
    print(f"flaxlm demo: transformers.pipeline('fill-mask', model={hf_dir!r}):")
    print(format_predictions(FILL_MASK_SENTENCES,
                             fill_mask_demo(hf_dir, FILL_MASK_SENTENCES, top_k=3)))
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

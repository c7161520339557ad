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
EVAL_TEXT = os.path.join(REPO, "data", "it", "eval.txt")
# Sentences of the held-out documents (data/it/eval.txt, never trained on), one word masked, with
# the word that was there: the model has to fill them from context, not from memory.
FILL_MASK_EXAMPLES = [
    ("Nei nomi dei file si distingue tra maiuscole e <mask>.", "minuscole"),
    ("Si può ora accedere alla shell di <mask> del sistema senza password.", "root"),
    ("In GNU/Linux ed altri sistemi operativi *nix, i file sono organizzati in <mask>.",
     "directory"),
    ("La shell permette di aprire file usando il <mask> interno con un descrittore di file "
     "arbitrario.", "comando"),
    ("Tutti i vecchi pacchetti <mask> vengono aggiornati con quelli più nuovi da .", "installati"),
]
FILL_MASK_SENTENCES = [sentence for sentence, _ in FILL_MASK_EXAMPLES]


def most_frequent_token_accuracy(eval_batches: list[dict]) -> float:
    """Accuracy of always predicting the commonest masked label: the floor any model must beat."""
    counts = collections.Counter()
    total = 0
    for batch in eval_batches:
        keep = batch["masked_weights"] > 0
        counts.update(batch["masked_labels"][keep].tolist())
        total += int(keep.sum())
    return counts.most_common(1)[0][1] / total if total else 0.0


def accuracy_by_input(hf_dir: str, eval_batches: list[dict], mask_id: int) -> dict:
    """Held-out accuracy of the exported model split by what the input held at each prediction.

    The MLM eval counts every prediction slot, but 20% of them keep (or randomly replace) their
    token, and a model that only copies a kept token and predicts the commonest token elsewhere
    already scores ~3× the baseline. Only slots whose input is the mask token are predicted from
    context alone: their accuracy, against the commonest label of those same slots, is the number
    that says whether the model learned anything about the language.
    """
    import numpy as np
    import torch
    from transformers import AutoModelForMaskedLM

    from flaxlm.convert.safe_load import check_hf_dir

    check_hf_dir(hf_dir)
    model = AutoModelForMaskedLM.from_pretrained(hf_dir, use_safetensors=True).eval()
    hits = {"mask": [], "other": []}
    labels = []
    with torch.no_grad():
        for batch in eval_batches:
            rows_R, slots_R = np.nonzero(batch["masked_weights"] > 0)
            if not len(rows_R):
                continue
            # Writable copies: the pipeline's arrays are read-only, which torch warns about.
            logits_BxLxV = model(
                input_ids=torch.from_numpy(np.array(batch["input_ids"], dtype=np.int64)),
                attention_mask=torch.from_numpy(np.array(batch["attention_mask"]))).logits
            positions_R = batch["masked_positions"][rows_R, slots_R]
            predicted_R = logits_BxLxV[rows_R, positions_R].argmax(-1).numpy()
            label_R = batch["masked_labels"][rows_R, slots_R]
            is_mask_R = batch["input_ids"][rows_R, positions_R] == mask_id
            hits["mask"] += (predicted_R == label_R)[is_mask_R].tolist()
            hits["other"] += (predicted_R == label_R)[~is_mask_R].tolist()
            labels += label_R[is_mask_R].tolist()
    commonest = collections.Counter(labels).most_common(1)[0][1] if labels else 0
    return {"mask_accuracy": sum(hits["mask"]) / max(len(hits["mask"]), 1),
            "mask_baseline": commonest / max(len(labels), 1),
            "mask_slots": len(hits["mask"]),
            "other_accuracy": sum(hits["other"]) / max(len(hits["other"]), 1),
            "other_slots": len(hits["other"])}


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
    tokenizer = load_tokenizer(tokenizer_dir)
    eval_batches = objective.eval_batches(DataContext(
        dataclasses.replace(config.data, tokenizer=tokenizer_dir), tokenizer, config.seed,
        config.loop.batch_size))
    baseline = most_frequent_token_accuracy(eval_batches)
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
    split = accuracy_by_input(hf_dir, eval_batches, tokenizer.mask_id)
    print(f"flaxlm demo: held-out accuracy where the input is <mask> (from context alone) "
          f"{split['mask_accuracy']:.3f} vs baseline {split['mask_baseline']:.3f} on those "
          f"{split['mask_slots']} slots; where the token was kept or replaced "
          f"{split['other_accuracy']:.3f} ({split['other_slots']} slots)")
    print(f"flaxlm demo: transformers.pipeline('fill-mask', model={hf_dir!r}) on held-out "
          "sentences of data/it/eval.txt (the masked word in brackets):")
    predictions = fill_mask_demo(hf_dir, FILL_MASK_SENTENCES, top_k=3)
    print(format_predictions([f"{s}  [{word}]" for s, word in FILL_MASK_EXAMPLES], predictions))
    return {**result, "baseline_accuracy": baseline, **split}


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

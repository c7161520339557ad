"""`make demo`: corpus → pre-trained encoder → fine-tuned POS tagger → transformers release.

A tokenizer and a small encoder are trained on the Italian sample text in data/it; the encoder is
fine-tuned for UD POS tagging on the ISDT sample in data/it/ud, next to the same fine-tuning from
random init; both models are exported and queried through `transformers.pipeline`. The workdirs
are kept, so running the demo again resumes (and finishes at once if the runs are complete).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import sys
import time

from flaxlm import jax_platform
from flaxlm.errors import FlaxlmError
from flaxlm.run.workdir import Workdir

# TensorFlow only runs the input pipeline here; its C++ start-up chatter is not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(REPO, "configs", "demo.py")
POS_CONFIG = os.path.join(REPO, "configs", "demo_pos.py")
# Two sentences of ISDT test outside the shipped test slice, with their annotated tags.
POS_EXAMPLES = os.path.join(REPO, "data", "it", "ud", "examples.conllu")
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
    return {
        "mask_accuracy": sum(hits["mask"]) / max(len(hits["mask"]), 1),
        "mask_baseline": commonest / max(len(labels), 1),
        "mask_slots": len(hits["mask"]),
        "other_accuracy": sum(hits["other"]) / max(len(hits["other"]), 1),
        "other_slots": len(hits["other"])
    }


def pos_examples() -> list[tuple[list[str], list[str]]]:
    """The two held-out sentences the demo tags: (words, ISDT's UPOS tags)."""
    sentences, words, tags = [], [], []
    with open(POS_EXAMPLES, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) == 10 and cols[0].isdigit():
                words.append(cols[1])
                tags.append(cols[3])
            elif not line.strip() and words:
                sentences.append((words, tags))
                words, tags = [], []
    if words:
        sentences.append((words, tags))
    return sentences


def tag_words(hf_dir: str, words: list[str]) -> list[str]:
    """`transformers.pipeline("token-classification")` on the words joined by spaces (how UD
    splits them), one tag a word: its first sub-token's, as the model was trained.

    The pipeline's per-token output is mapped back to words by character offset, not through its
    word aggregation: that merges neighbouring words of the same tag ("il proprio" → one DET),
    and before punctuation SentencePiece emits a lone "▁" piece that it takes for a word."""
    import bisect

    import torch
    from transformers import pipeline

    from flaxlm.convert.export import no_progress_bars

    with no_progress_bars():
        tagger = pipeline("token-classification", model=hf_dir, tokenizer=hf_dir,
                          aggregation_strategy="none", dtype=torch.float32, device="cpu")
    starts = [0]
    for word in words[:-1]:
        starts.append(starts[-1] + len(word) + 1)
    tags: list[str | None] = [None] * len(words)
    for token in tagger(" ".join(words)):  # in text order
        i = bisect.bisect_right(starts, token["start"]) - 1
        tags[i] = tags[i] or token["entity"]
    if None in tags:
        raise FlaxlmError(f"{hf_dir}: the pipeline tagged no piece of "
                          f"{words[tags.index(None)]!r}")
    return tags


def _in_repo(config_file: str) -> list[str]:
    """Overrides naming the config's data files by their place in the repository (the demo configs
    name them relative to it), so the demo runs from any directory."""
    from flaxlm import run_config
    data = run_config.load_config_file(config_file).data
    keys = [k for k in ("train_files", "eval_files", "test_files") if data.get(k)]
    return [
        f"--config.data.{k}=" + ",".join(os.path.join(REPO, f) for f in data[k].split(","))
        for k in keys
    ]


def _pretrain(workdir: str, steps: int | None):
    from flaxlm import run_config
    from flaxlm.data.tokenizers import train_tokenizer
    from flaxlm.train import train

    tokenizer_dir = os.path.join(workdir, "tokenizer-trained")
    if not os.path.exists(os.path.join(tokenizer_dir, "flaxlm_tokenizer.json")):
        train_tokenizer([os.path.join(REPO, "data", "it", "train.txt")], vocab_size=4000,
                        kind="unigram", out_dir=tokenizer_dir)
    overrides = [f"--config.data.tokenizer={tokenizer_dir}", *_in_repo(DEMO_CONFIG)]
    if steps:
        overrides.append(f"--config.train.steps={steps}")
    config = run_config.load(DEMO_CONFIG, overrides)
    print(
        f"flaxlm demo: 1/3 pre-training a {config.model_overrides['num_layers']} × "
        f"{config.model_overrides['hidden_size']} encoder on data/it/train.txt (MLM, "
        f"{config.loop.steps} steps)", flush=True)
    return config, tokenizer_dir, train(config, workdir)


def _finetune_pos(workdir: str, pretrained: str, tokenizer_dir: str, shape: list[str]) -> dict:
    """Test accuracy of POS fine-tuning from `pretrained`, and of the same from random init."""
    from flaxlm import run_config
    from flaxlm.train import train

    accuracy = {}
    for arm in ("pretrained", "random"):
        overrides = [f"--config.data.tokenizer={tokenizer_dir}", *_in_repo(POS_CONFIG)]
        overrides += [f"--config.init_from={pretrained}"] if arm == "pretrained" else shape
        run_dir = os.path.join(workdir, f"pos-{arm}")
        # Its report lines (labels, epochs, the test scores) go to a log: the demo prints the gist.
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "finetune.log"), "a", encoding="utf-8") as log, \
                contextlib.redirect_stdout(log):
            train(run_config.load(POS_CONFIG, overrides), run_dir, progress=False)
        accuracy[arm] = Workdir(run_dir).read_results()["test"]["accuracy"]
    return accuracy


def run(workdir: str, steps: int | None = None) -> dict:
    from flaxlm.convert.commands import export
    from flaxlm.convert.fill_mask import fill_mask_demo
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.objectives.registry import make_objective
    from flaxlm.plots import plot_curves
    from flaxlm.run.protocol import DataContext

    t0 = time.time()
    config, tokenizer_dir, result = _pretrain(workdir, steps)
    pretrain_minutes = (time.time() - t0) / 60
    objective = make_objective(config.objective, config.objective_sections)
    tokenizer = load_tokenizer(tokenizer_dir)
    # The same held-out batches the run evaluated on, masked by the run's own objective.
    eval_batches = objective.eval_batches(
        DataContext(dataclasses.replace(config.data, tokenizer=tokenizer_dir), tokenizer,
                    config.seed, config.loop.batch_size))

    print(
        "flaxlm demo: 2/3 fine-tuning it for Italian POS (data/it/ud, 300 sentences), and the "
        "same from random init", flush=True)
    t1 = time.time()
    shape = [
        f"--config.model.{k}={v}" for k, v in config.model_overrides.items()
        if k not in ("hidden_dropout", "attention_dropout")
    ]
    accuracy = _finetune_pos(workdir, workdir, tokenizer_dir, shape)
    finetune_minutes = (time.time() - t1) / 60

    print("flaxlm demo: 3/3 exporting both models to transformers", flush=True)
    mlm_dir, pos_dir = os.path.join(workdir, "hf"), os.path.join(workdir, "hf-pos")
    worst = 0.0
    for run_dir, out in ((workdir, mlm_dir), (os.path.join(workdir, "pos-pretrained"), pos_dir)):
        exported = export(run_dir, out, overwrite=True)
        worst = max(worst, *(v for k, v in exported.items() if k.endswith("diff")))
    split = accuracy_by_input(mlm_dir, eval_batches, tokenizer.mask_id)
    curves = plot_curves(workdir)

    print()
    print(f"Trained in {pretrain_minutes + finetune_minutes:.1f} min ({pretrain_minutes:.1f} "
          f"pre-training, {finetune_minutes:.1f} fine-tuning); exports match flaxlm's logits to "
          f"{worst:.0e}.")
    print(f"POS test accuracy (200 held-out ISDT sentences): {accuracy['pretrained']:.3f} "
          f"fine-tuned from the pre-trained encoder, {accuracy['random']:.3f} from random init.")
    print(f"transformers.pipeline('token-classification', model={pos_dir!r}) on two held-out "
          "sentences (a tag ISDT annotates otherwise is followed by *ISDT's):")
    for words, gold in pos_examples():
        tags = tag_words(pos_dir, words)
        print("  " + " ".join(f"{w}/{t}" + ("" if t == g else f"*{g}")
                              for w, t, g in zip(words, tags, gold)))
    print(f"Held-out MLM accuracy at <mask> {split['mask_accuracy']:.3f} vs "
          f"{split['mask_baseline']:.3f} for the commonest token; "
          f"transformers.pipeline('fill-mask', model={mlm_dir!r}) on held-out sentences:")
    for (sentence, word), top in zip(FILL_MASK_EXAMPLES,
                                     fill_mask_demo(mlm_dir, FILL_MASK_SENTENCES, top_k=3)):
        guesses = ", ".join(f"{p['token_str'].strip()!r} {p['score']:.2f}" for p in top)
        print(f"  {sentence}  [{word}] → {guesses}")
    if curves:
        print(f"Curves: {curves}; workdirs: {workdir} (pre-training), {workdir}/pos-* "
              "(fine-tuning, with finetune.log)")
    return {
        **result,
        **split, "pos_accuracy": accuracy,
        "minutes": pretrain_minutes + finetune_minutes
    }


def main(argv=None) -> int:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
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

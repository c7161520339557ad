"""CoNLL-2002 Spanish NER: the same initial weights fine-tuned by flaxlm and by a plain
transformers PyTorch loop, test (esp.testb) entity F1 from seqeval and wall time of each.

  init     a cased WordPiece tokenizer trained on ../shared/data/corpus/es.txt and a small BERT
           (`--layers` × `--hidden`, heads of 32), randomly initialized (`--pretrain-steps 0`) or pre-trained by
           flaxlm MLM on es.txt, exported to Hugging Face (`<out>/init_hf`) and imported back
           (`<out>/init_flaxlm`): both sides start from the same HF tensors.
  compare  fine-tunes both with the same hyper-parameters (the SELECTRA card's: batch 32,
           lr 1e-4, warmup 10%, linear decay to 0, layer-wise decay 0.8, seq_len 128), evaluates
           the model after every epoch on esp.testb, and prints the Markdown table.

Both sides: AdamW (β 0.9/0.999, ε 1e-6, weight decay 0.01 except biases and LayerNorm), global
norm clipping at 1.0, dropout 0.1, labels on the first sub-token of each word, sentences longer
than seq_len - 2 sub-tokens split into windows of seq_len - 2 every half window, each word
scored in the window where its first sub-token is most central. The PyTorch side
(benchmarks/runners/conll2002_torch.py) implements all of it with transformers' own pieces
(BertTokenizerFast, BertForTokenClassification, DataCollatorForTokenClassification,
get_linear_schedule_with_warmup, torch.optim.AdamW) and pads each batch to its longest row; flaxlm
runs `flaxlm train --config configs/ner_es_conll2002.py` (batches cut to length buckets). F1 is
seqeval's default (conlleval) entity F1 on words, for the PyTorch model and for flaxlm's exported
final checkpoint, computed by the same function (the PyTorch side's).
Both run pinned to the same `--threads` cores (torch.set_num_threads; XLA sizes its pool from the
affinity mask), one after the other.

Run (docs/finetuning.md, "flaxlm vs a PyTorch loop on CoNLL-2002"):
  nice -n 10 python -m benchmarks.conll2002_torch_vs_flaxlm init --out runs/conll_cmp
  nice -n 10 python -m benchmarks.conll2002_torch_vs_flaxlm compare --out runs/conll_cmp
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

from benchmarks.common import configure_threads
from benchmarks.runners import conll2002_torch
from benchmarks.runners.conll2002_torch import encode, read_conll
from flaxlm import jax_platform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
CONLL = os.path.join(DATA, "conll2002")
CONFIG = os.path.join(REPO, "configs", "ner_es_conll2002.py")


@dataclasses.dataclass(frozen=True)
class Recipe:
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup_proportion: float = 0.1
    layer_decay: float = 0.8
    head_lr_scale: float = 1.0  # the classifier's rate factor (finetune.head_lr_scale)
    seq_len: int = 128
    weight_decay: float = 0.01
    eps: float = 1e-6
    max_grad_norm: float = 1.0
    dropout: float = 0.1
    seed: int = 0
    train_sentences: int = 0  # 0: all of esp.train; else a seeded random subset of this many
    schedule: str = "linear"  # or "constant" (the POS recipe of benchmarks/flare_chain.py)


def flaxlm_cmd() -> list[str]:
    return [sys.executable, "-m", "flaxlm.cli"]


# -- data shared by both sides ---------------------------------------------------------------------
def training_file(out: str, recipe: Recipe) -> str:
    """esp.train, or a seeded random subset of its sentences written once under `out`."""
    source = os.path.join(CONLL, "esp.train")
    if not recipe.train_sentences:
        return source
    import numpy as np
    sentences = read_conll(source)
    keep = np.sort(
        np.random.default_rng(recipe.seed).permutation(len(sentences))[:recipe.train_sentences])
    path = os.path.join(out, f"esp.train.{recipe.train_sentences}")
    with open(path, "w", encoding="utf-8") as f:
        for i in keep:
            f.writelines(f"{w} _ {x}\n" for w, x in zip(*sentences[i]))
            f.write("\n")
    return path


# -- initial weights -------------------------------------------------------------------------------
def init(args) -> None:
    out = args.out
    os.makedirs(out, exist_ok=True)
    tok = os.path.join(out, "tok")
    corpus = os.path.join(DATA, "corpus", "es.txt")
    if not os.path.isdir(tok):
        subprocess.run([
            *flaxlm_cmd(), "tokenizer", "--corpus", corpus, "--vocab-size", "16000", "--type",
            "wordpiece", "--out", tok
        ], check=True)
    pre = os.path.join(out, "pre")
    # --pretrain-steps 0: random initial weights, saved by one step whose learning rate is 0
    # (the first step of a warmup).
    steps = args.pretrain_steps or 1
    subprocess.run([
        *flaxlm_cmd(), "train", "--config",
        os.path.join(REPO, "configs", "demo.py"), "--workdir", pre, "--no-progress",
        "--config.model.preset=bert-base-multilingual", f"--config.model.num_layers={args.layers}",
        f"--config.model.hidden_size={args.hidden}",
        f"--config.model.num_heads={args.hidden // 32}",
        f"--config.model.intermediate_size={4 * args.hidden}",
        f"--config.data.train_files={corpus}", "--config.data.eval_files=",
        f"--config.data.tokenizer={tok}", "--config.data.seq_len=128",
        "--config.train.batch_size=32", f"--config.train.steps={steps}",
        "--config.train.learning_rate=1e-3", f"--config.train.warmup_steps={min(100, steps)}",
        "--config.train.eval_every=0", "--config.train.checkpoint_every=200",
        "--config.train.log_every=20"
    ], check=True)
    hf, flax = os.path.join(out, "init_hf"), os.path.join(out, "init_flaxlm")
    subprocess.run([*flaxlm_cmd(), "export", "--workdir", pre, "--out", hf, "--overwrite"],
                   check=True)
    subprocess.run([*flaxlm_cmd(), "import", "--hf", hf, "--out", flax, "--overwrite"], check=True)


# -- the PyTorch side ------------------------------------------------------------------------------
def torch_finetune(args) -> None:
    began = time.perf_counter()
    recipe = Recipe(**json.loads(args.recipe))
    _write(
        args.out, "torch.json",
        conll2002_torch.finetune(os.path.join(args.out, "init_hf"), training_file(args.out, recipe),
                                 os.path.join(CONLL, "esp.testb"), recipe, args.threads, began))


def score_export(args) -> None:
    """seqeval entity scores of an exported flaxlm model, with the PyTorch side's own code."""
    recipe = Recipe(**json.loads(args.recipe))
    print(
        json.dumps(
            conll2002_torch.score(args.model, os.path.join(CONLL, "esp.testb"), recipe.seq_len,
                                  args.threads)))


# -- the flaxlm side -------------------------------------------------------------------------------
def flaxlm_args(out: str, recipe: Recipe) -> list[str]:
    return [
        "train", "--config", CONFIG, "--workdir",
        os.path.join(out, "flaxlm_run"), "--no-progress",
        f"--config.init_from={os.path.join(out, 'init_flaxlm')}",
        f"--config.data.train_files={training_file(out, recipe)}",
        f"--config.data.eval_files={os.path.join(CONLL, 'esp.testb')}",
        f"--config.finetune.epochs={recipe.epochs}",
        f"--config.finetune.layer_decay={recipe.layer_decay}",
        f"--config.train.batch_size={recipe.batch_size}",
        f"--config.train.learning_rate={recipe.learning_rate}",
        f"--config.train.warmup_proportion={recipe.warmup_proportion}",
        f"--config.train.weight_decay={recipe.weight_decay}", f"--config.train.eps={recipe.eps}",
        f"--config.train.max_grad_norm={recipe.max_grad_norm}",
        f"--config.data.seq_len={recipe.seq_len}", f"--config.seed={recipe.seed}",
        *(f"--config.model.{k}_dropout={recipe.dropout}"
          for k in ("hidden", "attention", "classifier")), "--config.train.log_every=10"
    ]


def flaxlm_finetune(args, recipe: Recipe) -> dict:
    from flaxlm.run.workdir import Workdir
    run = os.path.join(args.out, "flaxlm_run")
    if os.path.exists(run):
        raise SystemExit(f"{run} exists: remove it for a fresh timed run")
    _, flaxlm_time = timed([*flaxlm_cmd(), *flaxlm_args(args.out, recipe)])
    rows = Workdir(run).read_metrics()
    evals = [r for r in rows if "eval_entity_f1" in r]
    logged = [r for r in rows if "steps_per_sec" in r]
    # Train-only seconds, batching included: each log window's steps over its rate (evaluation
    # is outside the windows; the few compiling steps are counted at the window's rate).
    previous, train_s = 1, 0.0
    for r in logged:
        train_s += (r["step"] - previous) / r["steps_per_sec"]
        previous = r["step"]
    last = evals[-1]["step"]
    export = os.path.join(args.out, "flaxlm_export")
    subprocess.run([
        *flaxlm_cmd(), "export", "--workdir", run, "--out", export, "--step",
        str(last), "--overwrite"
    ], check=True, capture_output=True)
    scored = subprocess.run([
        sys.executable, "-m", "benchmarks.conll2002_torch_vs_flaxlm", "score", "--model", export,
        "--threads",
        str(args.threads), "--recipe",
        json.dumps(dataclasses.asdict(recipe))
    ], check=True, capture_output=True, text=True, cwd=REPO)
    losses = {}
    for r in rows:
        if "loss" in r and "eval_entity_f1" not in r:
            losses.setdefault(-(-r["step"] // evals[0]["step"]), []).append(r["loss"])
    result = {
        "command": " ".join(["flaxlm", *flaxlm_args(args.out, recipe)]),
        **flaxlm_time, "train_s": train_s,
        "steps": last,
        "recipe": dataclasses.asdict(recipe),
        "epochs": [{
            "epoch": i + 1,
            "train_loss": sum(losses[i + 1]) / len(losses[i + 1]),
            "entity_f1": r["eval_entity_f1"],
            "entity_precision": r["eval_entity_precision"],
            "entity_recall": r["eval_entity_recall"]
        } for i, r in enumerate(evals)],
        "export_seqeval": json.loads(scored.stdout.strip().splitlines()[-1]),
        "train_compiles": max(r.get("train_compiles", 0) for r in rows),
        "eval_compiles": max(r.get("eval_compiles", 0) for r in rows),
        "median_steps_per_sec": sorted(r["steps_per_sec"] for r in logged)[len(logged) // 2]
    }
    _write(args.out, "flaxlm.json", result)
    return result


# -- driver ----------------------------------------------------------------------------------------
def timed(command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs `command`; its wall seconds, CPU seconds (user + system, all its threads) and the
    machine's 1-minute load average before and after (the machine is shared)."""
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load, began = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(command, check=True, **kwargs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, {
        "wall_s": time.perf_counter() - began,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "load_before": load,
        "load_after": os.getloadavg()[0]
    }


def check_same_rows(out: str, recipe: Recipe) -> str:
    """Both sides' rows must be the same: flaxlm's encoding (flaxlm/data/word_windows.py) against
    this file's, on the training file and on esp.testb."""
    import numpy as np
    from transformers import AutoTokenizer

    from flaxlm.data import labelled
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.data.word_windows import encode_rows
    from flaxlm.run.workdir import Workdir
    hf_tokenizer = AutoTokenizer.from_pretrained(os.path.join(out, "init_hf"))
    tokenizer = load_tokenizer(Workdir.open(os.path.join(out, "init_flaxlm")).tokenizer_dir)
    counts = []
    for path in (training_file(out, recipe), os.path.join(CONLL, "esp.testb")):
        sentences = labelled.read_sentences(path, "conll2002")
        label_ids = {x: i for i, x in enumerate(labelled.label_vocabulary(sentences))}
        ours = encode_rows(sentences, tokenizer, label_ids, recipe.seq_len)
        theirs = encode(read_conll(path), hf_tokenizer, label_ids, recipe.seq_len)
        assert len(ours) == len(theirs), (path, len(ours), len(theirs))
        for r, row in enumerate(theirs):
            n = len(row["input_ids"])
            labelled_at = ours.label_weights_NxL[r] > 0
            assert list(ours.input_ids_NxL[r, :n]) == row["input_ids"], (path, r)
            assert (ours.input_ids_NxL[r, n:] == tokenizer.pad_id).all(), (path, r)
            assert list(np.flatnonzero(labelled_at)) == [
                c for c, x in enumerate(row["labels"]) if x != -100
            ], (path, r)
            assert list(ours.labels_NxL[r][labelled_at]) == [x for x in row["labels"] if x != -100]
        counts.append(f"{os.path.basename(path)}: {len(sentences)} sentences → {len(ours)} rows "
                      f"({ours.split_sentences} split into windows)")
    return "; ".join(counts)


def _write(out: str, name: str, record: dict) -> None:
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)


def compare(args) -> None:
    recipe = Recipe(epochs=args.epochs, train_sentences=args.train_sentences, seed=args.seed,
                    learning_rate=args.learning_rate)
    recipe_json = json.dumps(dataclasses.asdict(recipe))
    print(f"recipe: {recipe_json}", flush=True)
    rows = check_same_rows(args.out, recipe)
    print(f"same rows on both sides: {rows}", flush=True)
    _, torch_time = timed([
        sys.executable, "-m", "benchmarks.conll2002_torch_vs_flaxlm", "torch", "--out", args.out,
        "--threads",
        str(args.threads), "--recipe", recipe_json
    ], cwd=REPO)
    with open(os.path.join(args.out, "torch.json"), encoding="utf-8") as f:
        theirs = json.load(f)
    theirs.update(torch_time, rows=rows, recipe=dataclasses.asdict(recipe))
    _write(args.out, "torch.json", theirs)
    ours = flaxlm_finetune(args, recipe)
    print(table(recipe, ours, theirs))


def _load(result: dict) -> str:
    return f"{result['load_before']:.1f} → {result['load_after']:.1f}"


def _per_epoch(result: dict) -> str:
    return ", ".join(f"{e['entity_f1']:.4f}" for e in result["epochs"])


def table(recipe: Recipe, ours: dict, theirs: dict) -> str:
    f1 = ours["epochs"][-1]["entity_f1"], theirs["epochs"][-1]["entity_f1"]
    lines = [
        f"Recipe: {json.dumps(dataclasses.asdict(recipe))}", "",
        "| | test entity F1 (final epoch) | per epoch | wall time | CPU time | train steps only "
        "| load avg before → after |", "|---|---|---|---|---|---|---|",
        f"| flaxlm | {f1[0]:.4f} (seqeval on its export: "
        f"{ours['export_seqeval']['entity_f1']:.4f}) | "
        f"{_per_epoch(ours)} | {ours['wall_s']:.0f} s | {ours['cpu_s']:.0f} s | "
        f"{ours['train_s']:.0f} s ({ours['steps']} steps; {ours['train_compiles']} train + "
        f"{ours['eval_compiles']} eval compilations) | {_load(ours)} |",
        f"| PyTorch transformers loop | {f1[1]:.4f} | "
        f"{_per_epoch(theirs)} | "
        f"{theirs['wall_s']:.0f} s | {theirs['cpu_s']:.0f} s | {theirs['train_s']:.0f} s "
        f"({theirs['steps']} steps) | {_load(theirs)} |", "",
        f"F1 difference {100 * (f1[0] - f1[1]):+.2f} points; wall time flaxlm/PyTorch "
        f"{ours['wall_s'] / theirs['wall_s']:.2f}; CPU time flaxlm/PyTorch "
        f"{ours['cpu_s'] / theirs['cpu_s']:.2f}; train steps flaxlm/PyTorch "
        f"{ours['train_s'] / theirs['train_s']:.2f}"
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("init", "compare", "torch", "flaxlm", "score", "table"):
        s = sub.add_parser(name)
        s.add_argument("--out", default=os.path.join(REPO, "runs", "conll_cmp"))
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--recipe", default="{}")
        s.add_argument("--model", default="")
        s.add_argument("--pretrain-steps", type=int, default=800)
        s.add_argument("--layers", type=int, default=4)
        s.add_argument("--hidden", type=int, default=256)  # heads of 32, feed-forward 4×
        s.add_argument("--epochs", type=int, default=Recipe.epochs)
        s.add_argument("--train-sentences", type=int, default=0)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--learning-rate", type=float, default=Recipe.learning_rate)
    args = p.parse_args(argv)
    configure_threads(args.threads)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.command == "table":
        with open(os.path.join(args.out, "flaxlm.json"), encoding="utf-8") as f:
            ours = json.load(f)
        with open(os.path.join(args.out, "torch.json"), encoding="utf-8") as f:
            theirs = json.load(f)
        print(table(Recipe(**ours["recipe"]), ours, theirs))
        return
    if args.command == "flaxlm":  # the flaxlm side alone (e.g. rerun after a failure)
        flaxlm_finetune(args, Recipe(**json.loads(args.recipe)))
        return
    {
        "init": init,
        "compare": compare,
        "torch": torch_finetune,
        "score": score_export
    }[args.command](args)


if __name__ == "__main__":
    main()

"""FLARE's chain on a real release (docs/flare.md): the PyTorch rows and the table.

The flaxlm rows are plain CLI runs (`flaxlm import`, `prune-vocab`, `train`, `finetune`, listed in
docs/flare.md); this script adds what flaxlm cannot give about itself:

  torch   fine-tunes an exported Hugging Face directory with an independent PyTorch loop
          (benchmarks/runners/conll2002_torch.py: transformers' own pieces, no flaxlm code) on
          the POS or NER task, with the hyper-parameters read from the same flaxlm config file
          (configs/pos_it_isdt.py, configs/ner_es_conll2002.py) and the same overrides, scoring
          the test file after every epoch; writes `<out>.json`.
  table   one Markdown row per flaxlm fine-tuning workdir (per-epoch test scores from its
          metrics.jsonl, its parameter count) or PyTorch `<out>.json`.

  python -m benchmarks.flare_chain torch --task pos --init runs/flare/e5_hf --out runs/flare/torch_pos_e5
  python -m benchmarks.flare_chain table --task pos runs/flare/pos_e5 runs/flare/torch_pos_e5.json

Both sides evaluate on the test file after every epoch and the table reports the final epoch
(choosing the best epoch on test would be selection on test).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from benchmarks.common import configure_threads
from flaxlm import jax_platform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = {  # task: (config file, data format, the metrics the table shows)
    "pos": ("configs/pos_it_isdt.py", "conllu", ("accuracy", "macro_f1")),
    # Entity scores only: the PyTorch loop's NER epochs carry no word accuracy.
    "ner": ("configs/ner_es_conll2002.py", "conll2002",
            ("entity_f1", "entity_precision", "entity_recall")),
}


def recipe_from_config(task: str, overrides: list[str]):
    """The Recipe of benchmarks/conll2002_torch_vs_flaxlm.py holding the flaxlm config's own
    fine-tuning hyper-parameters (after `overrides`, as `flaxlm finetune` would apply them)."""
    from benchmarks.conll2002_torch_vs_flaxlm import Recipe
    from flaxlm import run_config
    raw = run_config.load(os.path.join(REPO, TASKS[task][0]), overrides).raw
    t, data = raw["train"], raw["data"]
    assert t["grad_accum_steps"] == 1 and (t["b1"], t["b2"]) == (0.9, 0.999), \
        "the PyTorch loop runs AdamW(0.9, 0.999) without accumulation"
    recipe = Recipe(epochs=raw["finetune"]["epochs"], batch_size=t["batch_size"],
                    learning_rate=t["learning_rate"], warmup_proportion=t["warmup_proportion"],
                    layer_decay=raw["finetune"]["layer_decay"],
                    head_lr_scale=raw["finetune"]["head_lr_scale"], seq_len=data["seq_len"],
                    weight_decay=t["weight_decay"], eps=t["eps"], max_grad_norm=t["max_grad_norm"],
                    dropout=_dropout(raw["model"]), seed=raw["seed"], schedule=t["schedule"])
    return recipe, data


def _dropout(model: dict) -> float:
    """The loop's one rate for hidden, attention and classifier dropout: 0.1 (the exported
    models' own) unless `--config.model.*_dropout` overrides set all three to one value."""
    rates = {model[k] for k in ("hidden_dropout", "attention_dropout", "classifier_dropout")}
    if rates == {None}:
        return 0.1
    if len(rates) != 1:
        raise SystemExit("the PyTorch loop has one dropout rate: set model.hidden_dropout, "
                         f"attention_dropout and classifier_dropout to one value (got {rates})")
    return float(rates.pop())


def torch_run(args) -> None:
    from benchmarks.runners import conll2002_torch
    began = time.perf_counter()
    recipe, data = recipe_from_config(args.task, args.override)
    train_file, test_file = data["train_files"], data["eval_files"]
    for path in (train_file, test_file):
        assert "," not in path and os.path.isfile(os.path.join(REPO, path)), path
    load = os.getloadavg()[0]
    record = conll2002_torch.finetune(args.init, os.path.join(REPO, train_file),
                                      os.path.join(REPO, test_file), recipe, args.threads, began,
                                      data_format=TASKS[args.task][1])
    record.update(task=args.task, init=args.init, train_file=train_file, test_file=test_file,
                  recipe=dataclasses.asdict(recipe), overrides=args.override, load_before=load,
                  load_after=os.getloadavg()[0], wall_s=time.perf_counter() - began)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)


def flaxlm_epochs(workdir: str) -> tuple[list[dict], dict]:
    """Per-epoch eval rows (without the `eval_` prefix) of a fine-tuning workdir, and a summary
    of its training speed (median steps/s of the logged windows)."""
    from flaxlm.run.workdir import Workdir
    rows = Workdir(workdir).read_metrics()
    evals = [{
        k[5:]: v
        for k, v in r.items() if k.startswith("eval_")
    } | {
        "step": r["step"]
    } for r in rows if "eval_loss" in r]
    rates = sorted(r["steps_per_sec"] for r in rows if "steps_per_sec" in r)
    return evals, {"median_steps_per_sec": rates[len(rates) // 2] if rates else float("nan")}


def table(args) -> None:
    metrics = TASKS[args.task][2]
    print("| run | " + " | ".join(f"test {m} (final epoch)"
                                  for m in metrics) + f" | per-epoch {metrics[0]} | speed |")
    print("|---|" + "---|" * (len(metrics) + 2))
    for source in args.sources:
        if source.endswith(".json"):
            with open(source, encoding="utf-8") as f:
                r = json.load(f)
            epochs = r["epochs"]
            speed = f"{1 / r['median_step_s']:.2f} steps/s (PyTorch, median)"
        else:
            epochs, summary = flaxlm_epochs(source)
            speed = f"{summary['median_steps_per_sec']:.2f} steps/s (flaxlm, median window)"
        final = epochs[-1]
        print(f"| {source} | " + " | ".join(f"{final[m]:.4f}" for m in metrics) + " | " +
              ", ".join(f"{e[metrics[0]]:.4f}" for e in epochs) + f" | {speed} |")


def main(argv=None) -> None:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("torch")
    t.add_argument("--task", choices=sorted(TASKS), required=True)
    t.add_argument("--init", required=True, help="an exported Hugging Face directory")
    t.add_argument("--out", required=True, help="writes OUT.json")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("override", nargs="*", help="--config.KEY=VALUE, as given to flaxlm")
    s = sub.add_parser("table")
    s.add_argument("--task", choices=sorted(TASKS), required=True)
    s.add_argument("sources", nargs="+", help="flaxlm workdirs and PyTorch .json files")
    args, unknown = p.parse_known_args(argv)
    if args.command == "torch":
        args.override = [*args.override, *unknown]
        configure_threads(args.threads)
        torch_run(args)
    else:
        table(args)


if __name__ == "__main__":
    main()

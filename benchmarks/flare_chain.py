"""FLARE's chain on a real release (docs/flare.md): the PyTorch rows and the table.

The flaxlm rows are plain CLI runs (`flaxlm import`, `prune-vocab`, `train`, `finetune`, listed in
docs/flare.md); this script adds what flaxlm cannot give about itself:

  torch   fine-tunes an exported Hugging Face directory with an independent PyTorch loop
          (benchmarks/runners/conll2002_torch.py: transformers' own pieces, no flaxlm code) on
          the POS or NER task, with the hyper-parameters read from the same flaxlm config file
          (configs/pos_it_isdt.py, configs/ner_es_conll2002.py) and the same overrides, scoring
          the test file after every epoch; writes `<out>.json`.
  converse
          `flaxlm finetune` itself (its trainer, dropout and evaluation untouched) into the
          workdir `--out`, from the flaxlm model `--flaxlm` with the PyTorch loop's draws for the
          same config, overrides and seed: its fresh classifier and its DataLoader's batch order,
          both made by the loop's own code (`conll2002_torch.seeded_draws`). With `torch`, it
          separates what each side computes from the random draws each side makes.
  table   one Markdown row per flaxlm fine-tuning workdir (per-epoch test scores from its
          metrics.jsonl, its parameter count) or PyTorch `<out>.json`.

  python -m benchmarks.flare_chain torch --task pos --init runs/flare/e5_hf --out runs/flare/torch_pos_e5
  python -m benchmarks.flare_chain converse --task pos --init runs/flare/it_pruned_hf \
      --flaxlm runs/flare/it_pruned --out runs/flare/pos_converse_s0 --config.seed=0
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

import numpy as np

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


def torch_draws(task: str, hf_dir: str, train_file: str,
                recipe) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """The PyTorch loop's draws for `recipe.seed`, from its own code: each epoch's row order (a
    DataLoader over row indices, `seeded_draws`) and its fresh classifier, named as flaxlm's."""
    from transformers import AutoTokenizer

    from benchmarks.runners import conll2002_torch as loop
    train = loop.READERS[TASKS[task][1]](train_file)
    labels = sorted({x for _, ls in train for x in ls})
    rows = loop.encode(train, AutoTokenizer.from_pretrained(hf_dir), {
        x: i
        for i, x in enumerate(labels)
    }, recipe.seq_len)
    model, loader = loop.seeded_draws(hf_dir, labels, recipe, range(len(rows)), list)
    orders = [np.concatenate([np.asarray(b) for b in loader]) for _ in range(recipe.epochs)]
    return orders, {
        "classifier/kernel": model.classifier.weight.detach().numpy().T.copy(),
        "classifier/bias": model.classifier.bias.detach().numpy().copy()
    }


def converse_run(args) -> None:
    import jax

    from flaxlm import cli
    from flaxlm.models.param_tree import flat_names, unflatten_like
    from flaxlm.objectives import token_classification
    from flaxlm.run import weights
    recipe, data = recipe_from_config(args.task, args.override)
    orders, classifier = torch_draws(args.task, args.init, os.path.join(REPO, data["train_files"]),
                                     recipe)
    load = weights.load

    def load_then_torch_classifier(program, objective, init_from, state, frozen):
        state, frozen, line = load(program, objective, init_from, state, frozen)
        if state is not None:  # a fresh start (a resumed run keeps its checkpoint)
            flat = flat_names(state["params"])
            for name, value in classifier.items():
                if flat[name].shape != value.shape:
                    raise SystemExit(f"{name}: flaxlm {flat[name].shape}, PyTorch {value.shape}")
                flat[name] = jax.device_put(value, flat[name].sharding)
            state = {**state, "params": unflatten_like(state["params"], flat)}
            line = f"{line}; classifier: the PyTorch loop's seed-{recipe.seed} draw"
        return state, frozen, line

    def torch_order(seed: int, epoch: int, num_rows: int) -> np.ndarray:
        if seed != recipe.seed or len(orders[epoch]) != num_rows:
            raise SystemExit(f"flaxlm asks for seed {seed}, {num_rows} rows; the PyTorch loop "
                             f"drew seed {recipe.seed}, {len(orders[epoch])} rows")
        return orders[epoch]

    weights.load, token_classification.epoch_order = load_then_torch_classifier, torch_order
    raise SystemExit(
        cli.main([
            "finetune", "--config",
            os.path.join(REPO, TASKS[args.task][0]), "--workdir", args.out,
            f"--config.init_from={args.flaxlm}", *args.override, "--no-progress"
        ]))


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
    print("| run | " + " | ".join(f"test {m} (final epoch)" for m in metrics) +
          f" | test loss | per-epoch {metrics[0]} | speed |")
    print("|---|" + "---|" * (len(metrics) + 3))
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
        # The same definition on both sides (labelled first sub-tokens); PyTorch results written
        # before the loop logged it have none.
        loss = final.get("loss", final.get("test_loss"))
        print(f"| {source} | " + " | ".join(f"{final[m]:.4f}" for m in metrics) +
              f" | {'—' if loss is None else f'{loss:.4f}'} | " +
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
    c = sub.add_parser("converse")
    c.add_argument("--task", choices=sorted(TASKS), required=True)
    c.add_argument("--init", required=True, help="the PyTorch side's exported directory")
    c.add_argument("--flaxlm", required=True, help="the same model's flaxlm workdir")
    c.add_argument("--out", required=True, help="the flaxlm fine-tuning workdir")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("override", nargs="*", help="--config.KEY=VALUE, as given to flaxlm")
    s = sub.add_parser("table")
    s.add_argument("--task", choices=sorted(TASKS), required=True)
    s.add_argument("sources", nargs="+", help="flaxlm workdirs and PyTorch .json files")
    args, unknown = p.parse_known_args(argv)
    if args.command in ("torch", "converse"):
        args.override = [*args.override, *unknown]
        configure_threads(args.threads)
        (torch_run if args.command == "torch" else converse_run)(args)
    else:
        table(args)


if __name__ == "__main__":
    main()

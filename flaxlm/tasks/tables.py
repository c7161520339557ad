"""`flaxlm evaluate`: the seed model cards' tables, in Markdown, from workdirs' results.json.

  FLARE     | Task | Recall | Precision | F1 |            token-level macro scores, per workdir
  SELECTRA  | Model | CoNLL2002-NER (f1) | PAWS-X (acc) | XNLI (acc) | Params |
            one row per init_from, one column per task: entity F1 where the labels are IOB,
            else accuracy for sequence tasks, else macro F1
  PAN-X     | Training Loss | Epoch | Step | Validation Loss | F1 |   per evaluation of one run
            (F1: entity F1 where the labels are IOB, else macro F1)
Scores are the test set's where the run had data.test_files, else the best epoch's dev scores
(the held-out fold's with finetune.folds); several runs show mean ± sample std.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from flaxlm.errors import FlaxlmError
from flaxlm.run.workdir import Workdir

# Column names of the SELECTRA card for the configs that reproduce it.
CARD_COLUMNS = {
    "ner_es_conll2002": "CoNLL2002-NER (f1)",
    "pawsx_es": "PAWS-X (acc)",
    "xnli_es": "XNLI (acc)"
}
_SHORT = {"entity_f1": "f1", "accuracy": "acc", "macro_f1": "macro f1"}


def read_results(workdir: str) -> dict[str, Any]:
    wd = Workdir(workdir)
    results = wd.read_results()
    if results is None:
        name = os.path.basename(wd.results_file)
        raise FlaxlmError(f"{workdir}: no {name} (run `flaxlm finetune` to the end first; a "
                          "stopped run resumes with the same command)")
    return results


def _scores(results: dict) -> tuple[str, dict[str, dict]]:
    """("test" or "dev", {metric: {mean, std}}) of one results.json, single run or repeats."""
    if "runs" in results:
        source = "test" if "test" in results else "dev"
        return source, results.get("test") or results.get("best_dev") or {}
    if "test" in results:
        return "test", {k: {"mean": v, "std": None} for k, v in results["test"].items()}
    dev = (results.get("best") or {}).get("dev") or {}
    return "dev", {k: {"mean": v, "std": None} for k, v in dev.items()}


def _headline(results: dict, scores: dict) -> str:
    if "entity_f1" in scores:
        return "entity_f1"
    return "accuracy" if results["objective"] == "sequence_classification" else "macro_f1"


def _fmt(score: dict | None) -> str:
    if not score or score["mean"] is None:
        return "–"
    return f"{score['mean']:.4f}" + (f" ± {score['std']:.4f}" if score["std"] is not None else "")


def _cell(score: dict | None) -> str:
    return _fmt(score) + (" (dev)" if score and score["on"] == "dev" else "")


def _params(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e5 else f"{count / 1e3:.0f}k"


def build(workdirs: Sequence[str]) -> dict[str, Any]:
    """The three tables as data: {"flare": rows, "selectra": rows, "epochs": {task: rows}}."""
    flare, models, epochs = [], {}, {}
    loaded = [(workdir, read_results(workdir)) for workdir in workdirs]
    tasks = [r.get("task") or os.path.basename(os.path.normpath(w)) for w, r in loaded]
    for (workdir, results), task in zip(loaded, tasks):
        source, scores = _scores(results)
        metric = _headline(results, scores)
        column = CARD_COLUMNS.get(task, f"{task} ({_SHORT.get(metric, metric)})")
        if tasks.count(task) > 1:  # e.g. a seeds workdir and one of its runs: tell them apart
            where = os.path.basename(os.path.normpath(workdir))
            task, column = f"{task} [{where}]", f"{column} [{where}]"
        if "macro_f1" in scores:
            flare.append({
                "task": task,
                "on": source,
                **{
                    k: scores.get(f"macro_{k}")
                    for k in ("recall", "precision", "f1")
                }
            })
        model = os.path.basename(os.path.normpath(results.get("init_from") or "")) or "(scratch)"
        row = models.setdefault(model, {"model": model, "params": results["params"], "scores": {}})
        row["scores"][column] = {
            **(scores.get(metric) or {
                   "mean": None,
                   "std": None
               }), "metric": metric,
            "on": source
        }
        if "runs" not in results and results.get("epochs"):
            f1 = "entity_f1" if "entity_f1" in results["epochs"][0]["dev"] else "macro_f1"
            epochs[task] = [{
                "training_loss": r["train_loss"],
                "epoch": r["epoch"],
                "step": r["step"],
                "validation_loss": r["dev_loss"],
                "f1": r["dev"].get(f1)
            } for r in results["epochs"]]
    return {"flare": flare, "selectra": list(models.values()), "epochs": epochs}


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(tables: dict[str, Any]) -> str:
    parts = []
    if tables["flare"]:
        parts.append("FLARE (token-level macro scores)\n\n" +
                     _table(("Task", "Recall", "Precision",
                             "F1"), [(f"{r['task']} ({r['on']})", _fmt(r["recall"]),
                                      _fmt(r["precision"]), _fmt(r["f1"]))
                                     for r in tables["flare"]]))
    columns = list(dict.fromkeys(c for r in tables["selectra"] for c in r["scores"]))
    parts.append("SELECTRA (mean ± std over runs)\n\n" +
                 _table(("Model", *columns, "Params"), [(r["model"], *(_cell(r["scores"].get(c))
                                                                       for c in columns),
                                                         _params(r["params"]))
                                                        for r in tables["selectra"]]))
    for task, rows in tables["epochs"].items():
        parts.append(f"PAN-X layout: {task}, per evaluation on dev\n\n" +
                     _table(("Training Loss", "Epoch", "Step", "Validation Loss",
                             "F1"), [(_num(r["training_loss"]), _num(r["epoch"], 1), str(r["step"]),
                                      _num(r["validation_loss"]), _num(r["f1"])) for r in rows]))
    return "\n\n".join(parts)

"""`results.json`: what a fine-tuning run, or a set of k-fold / seed runs, measured.

One run (written when training ends normally, never when a signal stopped it):
  objective, init_from, params (parameter count), selection {metric, mode}, steps_per_epoch,
  epochs   [{epoch, step, train_loss, dev_loss, dev: {metric: value}}], one per evaluation;
           train_loss is the mean training loss over the steps since the previous evaluation
           (the lines logged since then, each a window mean that no evaluation splits,
           flaxlm/run/log_window.py, weighted by its log_window_steps), epoch is
           step / steps_per_epoch
  best     {epoch, step, dev} of the evaluation best.json names (absent without evaluations)
  test     {metric: value} on data.test_files (with test files) of the best epoch's weights, or
           with finetune.test_on=last of the last epoch's (SELECTRA's protocol: its
           run_finetuning.py scores the model after the last epoch on the split its tasks read
           as "dev", which for CoNLL-2002 is the test set); test_step and test_on say which
The task's metrics by name: accuracy, macro_precision/macro_recall/macro_f1, and for IOB labels
entity_precision/entity_recall/entity_f1 (flaxlm/objectives/word_metrics.py).

Several runs (`flaxlm finetune` with finetune.folds / finetune.seeds): `runs` {name: one run's
results}, and `best_dev` and `test` as {metric: {mean, std, n}} over the runs (std: the sample
standard deviation, n - 1 in the denominator, as the cards' ± report; null for one run).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import numpy as np

from flaxlm.run.checkpoint import read_params
from flaxlm.run.protocol import DataContext
from flaxlm.run.workdir import Workdir

# Counts, not scores: kept per run, not averaged.
_COUNTS = ("examples", "labelled_tokens")


def test_context(ctx):
    """The `DataContext` whose eval batches are `data.test_files` (whole files, any fold)."""
    return dataclasses.replace(
        ctx, data=dataclasses.replace(ctx.data, eval_files=ctx.data.test_files, folds=0, fold=-1))


def epoch_rows(workdir: str, metric: str, steps_per_epoch: int) -> list[dict[str, Any]]:
    """One row per evaluation in `<workdir>/metrics.jsonl` (see the module docstring)."""
    rows, train_losses, window_steps = [], [], []
    for record in Workdir(workdir).read_metrics():
        if "loss" in record and record["loss"] is not None:
            train_losses.append(record["loss"])
            # Lines written before log windows existed hold one step's loss.
            window_steps.append(record.get("log_window_steps", 1))
        if f"eval_{metric}" not in record:
            continue
        dev = {
            k[len("eval_"):]: v
            for k, v in record.items() if k.startswith("eval_") and k != "eval_loss"
        }
        step = record["step"]
        rows.append({
            "epoch": step / steps_per_epoch if steps_per_epoch else None,
            "step": step,
            "train_loss": (float(np.average(train_losses, weights=window_steps))
                           if sum(window_steps) else None),
            "dev_loss": record.get("eval_loss"),
            "dev": dev
        })
        train_losses, window_steps = [], []
    return rows


def finish(workdir: str, *, objective, test_batches: list, evaluate: Callable, final_params: Any,
           abstract_params: Any, final_step: int, steps_per_epoch: int, param_count: int,
           is_main: bool, test_on: str = "best") -> dict[str, Any]:
    """Evaluates the best epoch's weights (`test_on="last"`: the last epoch's) on `test_batches`
    (if any) and writes results.json.

    `evaluate(params, batches)` is the trainer's jitted evaluation ({"eval_<metric>": value})."""
    selection = objective.selection
    wd = Workdir(workdir)
    best = wd.read_best()
    results: dict[str, Any] = {
        "objective": objective.name,
        "init_from": wd.setting("init_from") or "",
        "params": param_count,
        "selection": {
            "metric": selection.metric,
            "mode": selection.mode
        },
        "steps_per_epoch": steps_per_epoch,
        "epochs": epoch_rows(workdir, selection.metric, steps_per_epoch)
    }
    if best is not None:
        row = next((r for r in results["epochs"] if r["step"] == best["step"]), None)
        results["best"] = {
            "epoch": row and row["epoch"],
            "step": best["step"],
            "dev": row and row["dev"]
        }
    if test_batches:
        on_best = best is not None and test_on == "best"
        step = _same_on_every_process(best["step"] if on_best else final_step)
        params = (final_params
                  if step == final_step else read_params(workdir, abstract_params, step=step)[0])
        scores = evaluate(params, test_batches)
        results["test"] = {k[len("eval_"):]: v for k, v in scores.items()}
        results["test_step"], results["test_on"] = step, "best" if on_best else "last"
        if is_main:
            shown = " ".join(f"{k}={v:.4f}" for k, v in results["test"].items() if k not in _COUNTS)
            which = ", the best epoch" if on_best else (", the last epoch" if best else "")
            print(f"flaxlm: test (step {step}{which}): {shown}", flush=True)
    if is_main:
        wd.write_results(results)
    return results


def _same_on_every_process(step: int) -> int:
    """Process 0's value (it wrote best.json): every process must evaluate the same weights."""
    if jax.process_count() == 1:
        return step
    from jax.experimental import multihost_utils
    return int(multihost_utils.broadcast_one_to_all(np.int32(step)))


def summary(values: list[float]) -> dict[str, Any]:
    """{mean, std, n}; std is the sample standard deviation (None for one value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return {"mean": float(np.mean(finite)) if finite else None, "std": std, "n": len(finite)}


def aggregate(runs: Mapping[str, Mapping[str, Any]], **extra) -> dict[str, Any]:
    """The results of several runs: every run's, and mean ± std of the best dev and test scores."""
    first = next(iter(runs.values()))
    out: dict[str, Any] = {
        **extra, "objective": first["objective"],
        "init_from": first.get("init_from", ""),
        "params": first["params"],
        "selection": first["selection"],
        "runs": dict(runs)
    }
    for key, scores_of in (("best_dev", lambda r:
                            (r.get("best") or {}).get("dev")), ("test", lambda r: r.get("test"))):
        per_run = [scores_of(r) for r in runs.values()]
        if all(per_run):
            names = [k for k in per_run[0] if k not in _COUNTS and all(k in s for s in per_run)]
            out[key] = {k: summary([s[k] for s in per_run]) for k in names}
    return out

"""`flaxlm finetune`: one fine-tuning run, or one per fold and seed, then results.json.

Without repeats the run trains in the workdir itself. With `finetune.folds=K` and/or
`finetune.seeds=N` every run is an ordinary workdir under it (`fold-0/` … `fold-{K-1}/`,
`seed-{s}/` for s = seed … seed+N-1, `fold-{i}-seed-{s}/` with both), trained by
`flaxlm.train.train` with `--config.finetune.fold=i` / `--config.seed=s` added to the command's
overrides; then `<workdir>/results.json` aggregates them (flaxlm/run/results.py). Running the
same command again skips the runs that finished (their results.json exists) and resumes the
interrupted one from its checkpoints, like `flaxlm train`.

`init_from` may name a Hugging Face model directory instead of a flaxlm workdir: it is imported
once into `<workdir>/init` (as `flaxlm import` does, parity-checked) and every run starts there.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax

from flaxlm import run_config, storage
from flaxlm.run.workdir import Workdir, open_or_import
from flaxlm.errors import FlaxlmError
from flaxlm.run.results import aggregate


def check_single_run(config: run_config.RunConfig) -> None:
    """`flaxlm train` runs one training: repeats need `flaxlm finetune`."""
    folds, seeds = config.data.folds, config.seeds
    if seeds > 1 or (folds and config.data.fold < 0):
        raise FlaxlmError(
            f"finetune.folds={folds}, finetune.seeds={seeds} ask for "
            "several runs: use `flaxlm finetune` (or set --config.finetune.fold=I and "
            "--config.finetune.seeds=1 to train one of them)")


def run_plan(folds: int, seeds: int, seed: int) -> list[tuple[str, list[str]]]:
    """[(subdirectory, overrides)] of every run; [] when the workdir holds the one run."""
    fold_runs = [(f"fold-{i}", [f"--config.finetune.fold={i}"]) for i in range(folds)]
    seed_runs = [(f"seed-{s}", [f"--config.seed={s}"]) for s in range(seed, seed + seeds)]
    if folds and seeds > 1:
        return [(f"{f}-{s}", fo + so) for f, fo in fold_runs for s, so in seed_runs]
    return fold_runs or (seed_runs if seeds > 1 else [])


def _init_from(source: str, workdir: str) -> str:
    """A flaxlm workdir to start from: `source`, or its import into <workdir>/init."""
    if not source:
        return source

    def import_once(hf_dir: str, target: str) -> None:
        if Workdir(target).run is not None:
            print(f"flaxlm: init_from {hf_dir}: using its import in {target}", flush=True)
            return
        from flaxlm.convert.commands import import_hf
        summary = import_hf(hf_dir, target)
        print(
            f"flaxlm: init_from {hf_dir} is a Hugging Face directory: imported into {target} "
            f"({summary['params']:,} parameters)", flush=True)

    return open_or_import(source, import_once, os.path.join(workdir, "init")).path


def _train_one(config_path: str, overrides: Sequence[str], workdir: str, task: str,
               progress: bool) -> dict[str, Any] | None:
    from flaxlm.train import train
    last = train(run_config.load(config_path, overrides), workdir, progress=progress)
    if last.get("stopped_by"):
        return None
    results = {"task": task, **last["results"]}
    if jax.process_index() == 0:
        Workdir(workdir).write_results(results)
    return results


def finetune(config_path: str, overrides: Sequence[str], workdir: str, *,
             progress: bool = True) -> dict[str, Any] | None:
    """Runs (or resumes) every run and returns the workdir's results; None if a signal stopped
    a run (its checkpoint is saved: the same command resumes)."""
    config = run_config.load(config_path, overrides)
    if config.objective not in ("token_classification", "sequence_classification"):
        raise FlaxlmError(f"{config_path}: objective {config.objective!r} is not fine-tuning; "
                          "use `flaxlm train`")
    task = os.path.splitext(os.path.basename(config_path))[0]
    storage.makedirs(workdir)
    init_from = _init_from(config.init_from, workdir)
    base = [
        *overrides, *([f"--config.init_from={init_from}"] if init_from != config.init_from else [])
    ]
    plan = run_plan(config.data.folds, config.seeds, config.seed)
    if not plan:
        return _train_one(config_path, base, workdir, task, progress)
    if Workdir(workdir).has_checkpoints():
        raise FlaxlmError(f"{workdir} holds a single run's checkpoints; repeats "
                          "(finetune.folds / finetune.seeds) need a new --workdir")
    done: dict[str, dict] = {}
    for number, (name, run_overrides) in enumerate(plan, 1):
        path = os.path.join(workdir, name)
        finished = Workdir(path).read_results()
        if finished is not None:
            print(f"flaxlm: run {number}/{len(plan)} {name}: finished before, skipped", flush=True)
            done[name] = finished
            continue
        print(f"flaxlm: run {number}/{len(plan)} {name}", flush=True)
        results = _train_one(config_path, [*base, *run_overrides], path, task, progress)
        if results is None:
            return None
        done[name] = results
    results = aggregate(done, task=task, folds=config.data.folds, seeds=config.seeds)
    if jax.process_index() == 0:
        Workdir(workdir).write_results(results)
        for key in ("best_dev", "test"):
            shown = " ".join(f"{k}={v['mean']:.4f}±{v['std'] or 0:.4f}"
                             for k, v in results.get(key, {}).items() if v["mean"] is not None)
            if shown:
                print(f"flaxlm: {len(done)} runs, {key} mean±std: {shown}", flush=True)
    return results

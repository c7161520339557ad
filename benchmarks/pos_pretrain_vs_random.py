"""Does flaxlm's pre-training help downstream? UD Italian POS from a pre-trained workdir vs the
same architecture from random initialization, same fine-tuning hyper-parameters, several seeds.

  python -m benchmarks.pos_pretrain_vs_random --pretrained runs/demo --seeds 0,1,2

Both arms run `configs/pos_it_isdt.py` (ISDT dev → train, ISDT test → eval, 5 epochs, best epoch
by macro F1) with the pre-trained workdir's tokenizer and model shapes; only `init_from` differs.
Prints a Markdown table (mean ± std over seeds, then every run) and writes it as JSON to
`<workdir>/results.json`. Each run is a workdir, so an interrupted comparison resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from flaxlm import jax_platform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POS_CONFIG = os.path.join(REPO, "configs", "pos_it_isdt.py")
METRICS = ("macro_recall", "macro_precision", "macro_f1", "accuracy")
# The shape keys a random-init arm copies from the pre-trained run (the rest are preset defaults).
SHAPE_KEYS = ("preset", "num_layers", "hidden_size", "num_heads", "intermediate_size", "head_dim",
              "embedding_size")


def shape_overrides(pretrained: str) -> list[str]:
    from flaxlm.errors import FlaxlmError
    from flaxlm.run.workdir import Workdir

    wd = Workdir(pretrained)
    model = wd.setting("model")
    if not isinstance(model, dict):
        raise FlaxlmError(f"{wd.config_file}: cannot read the pre-trained run's model section; "
                          "pass a flaxlm workdir")
    return [f"--config.model.{k}={model[k]}" for k in SHAPE_KEYS if model.get(k) is not None]


def best_eval(workdir: str) -> dict:
    """The evaluation of the epoch `best.json` names."""
    from flaxlm.run.workdir import Workdir

    wd = Workdir(workdir)
    step = wd.read_best()["step"]
    rows = wd.read_metrics()
    row = next(r for r in rows if r.get("step") == step and "eval_macro_f1" in r)
    return {"step": step, **{m: row[f"eval_{m}"] for m in METRICS}}


def run_arm(pretrained: str, workdir: str, seed: int, init: str, extra: list[str]) -> dict:
    from flaxlm import run_config
    from flaxlm.train import train

    overrides = [
        f"--config.seed={seed}", f"--config.data.tokenizer={os.path.join(pretrained, 'tokenizer')}",
        *shape_overrides(pretrained), *extra
    ]
    if init == "pretrained":
        overrides.append(f"--config.init_from={pretrained}")
    # A finished workdir resumes at its last step and returns at once.
    train(run_config.load(POS_CONFIG, overrides), workdir, progress=False)
    return best_eval(workdir)


def summarize(runs: list[dict]) -> dict:
    out = {}
    for init in ("pretrained", "random"):
        arm = [r for r in runs if r["init"] == init]
        out[init] = {
            m: {
                "mean": statistics.fmean(r[m] for r in arm),
                "std": statistics.pstdev(r[m] for r in arm)
            }
            for m in METRICS
        }
    return out


def markdown(runs: list[dict], summary: dict, label: str) -> str:
    lines = [
        "| init | seeds | Recall | Precision | F1 (macro) | Accuracy |", "|---|---|---|---|---|---|"
    ]
    seeds = ",".join(str(r["seed"]) for r in runs if r["init"] == "random")
    for init, name in (("pretrained", label), ("random", "random init")):
        cells = [f"{summary[init][m]['mean']:.4f} ± {summary[init][m]['std']:.4f}" for m in METRICS]
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    lines += [
        "", "| init | seed | best epoch step | Recall | Precision | F1 (macro) | Accuracy |",
        "|---|---|---|---|---|---|---|"
    ]
    for r in runs:
        lines.append(f"| {r['init']} | {r['seed']} | {r['step']} | " +
                     " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pos_pretrain_vs_random",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", required=True, help="a flaxlm MLM workdir (e.g. runs/demo)")
    ap.add_argument("--workdir", default="runs/pos-compare")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument(
        "--arms", default="pretrained,random",
        help="run only these arms now (the random arm does not need the pre-training "
        "to have finished, only its tokenizer and config.json)")
    ap.add_argument(
        "--learning-rate", type=float, default=1e-3,
        help="constant fine-tuning rate for both arms (the card's 1e-5 is for a "
        "17M-parameter MiniLM and barely moves a demo-sized model in 90 steps)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="fine-tuning epochs for both arms (default: the POS config's 5)")
    ap.add_argument("--dropout", type=float, default=0.1,
                    help="hidden, attention and classifier dropout for both arms")
    args = ap.parse_args(argv)

    from flaxlm.errors import FlaxlmError

    pretrained, workdir = os.path.abspath(args.pretrained), os.path.abspath(args.workdir)
    os.chdir(REPO)  # the POS config names the UD files relative to the repository
    extra = [
        f"--config.train.learning_rate={args.learning_rate}", "--config.train.schedule=constant",
        *([f"--config.finetune.epochs={args.epochs}"] if args.epochs else []),
        *(f"--config.model.{k}={args.dropout}"
          for k in ("hidden_dropout", "attention_dropout", "classifier_dropout"))
    ]
    runs, arms = [], args.arms.split(",")
    if not arms or set(arms) - {"pretrained", "random"}:
        ap.error(f"--arms {args.arms!r}: a comma-separated subset of pretrained,random")
    try:
        for seed in (int(s) for s in args.seeds.split(",")):
            for init in (a for a in ("pretrained", "random") if a in arms):
                result = run_arm(pretrained, os.path.join(workdir, f"{init}-seed{seed}"), seed,
                                 init, extra)
                runs.append({"init": init, "seed": seed, **result})
                print(
                    f"pos: {init} seed {seed}: macro F1 {result['macro_f1']:.4f} "
                    f"accuracy {result['accuracy']:.4f} (best at step {result['step']})",
                    flush=True)
    except FlaxlmError as e:
        print(f"flaxlm: error: {e}", file=sys.stderr)
        return 2
    if set(arms) != {"pretrained", "random"}:
        return 0
    summary = summarize(runs)
    label = f"pre-trained ({os.path.basename(pretrained)})"
    print(markdown(runs, summary, label))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(
            {
                "pretrained": pretrained,
                "learning_rate": args.learning_rate,
                "dropout": args.dropout,
                "runs": runs,
                "summary": summary
            }, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

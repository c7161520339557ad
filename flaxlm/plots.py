"""Training curves from `metrics.jsonl` as one PNG: loss and accuracy, train and held-out."""

from __future__ import annotations

import os

from flaxlm.metrics_log import read_metrics


def plot_curves(workdir: str, out_path: str | None = None) -> str | None:
    """Writes `<workdir>/curves.png` (or `out_path`); returns the path, None if nothing is logged."""
    import matplotlib
    matplotlib.use("Agg")  # files only: runs on headless TPU VMs and CI
    import matplotlib.pyplot as plt

    metrics = read_metrics(workdir)
    train = [m for m in metrics if m.get("loss") is not None]
    evals = [m for m in metrics if m.get("eval_loss") is not None]
    if not train:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_loss, "loss", "MLM loss"), (ax_acc, "accuracy", "MLM accuracy")):
        ax.plot([m["step"] for m in train], [m.get(key) for m in train], label="train")
        if evals:
            ax.plot([m["step"] for m in evals], [m.get(f"eval_{key}") for m in evals], "o-",
                    label="held-out")
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out_path = out_path or os.path.join(workdir, "curves.png")
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path

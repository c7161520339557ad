"""Training curves from `metrics.jsonl` as one PNG: the objective's metrics, train and held-out.

Which metrics: the run's objective (named in `config.json`) says, through its `summary_keys` (what
the progress bar shows; MLM: loss and accuracy) and the held-out metric that selects the best
checkpoint, if any. One panel each, titled "<OBJECTIVE> <metric>" (MLM: "MLM loss", "MLM
accuracy"). An objective this flaxlm does not know is drawn from `loss`, which every objective
logs.
"""

from __future__ import annotations

import dataclasses
import io
import os

from flaxlm import storage
from flaxlm.errors import FlaxlmError
from flaxlm.run.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    train: tuple[tuple[int, float], ...]  # (step, value)
    held_out: tuple[tuple[int, float], ...]


def objective_metrics(wd: Workdir) -> tuple[str, tuple[str, ...]]:
    """(objective name, metric keys to plot) of the run in `wd`."""
    from flaxlm.objectives import registry
    name = wd.objective if wd.run is not None else "mlm"
    sections = {
        k: v
        for k, v in (wd.setting("objective") or {}).items() if k != "name" and isinstance(v, dict)
    }
    try:
        objective = registry.make_objective(name, sections)
    except (FlaxlmError, TypeError):  # unknown here, or settings of another flaxlm version
        return name, ("loss", )
    keys = tuple(objective.summary_keys)
    selection = getattr(objective, "selection", None)
    if selection is not None and selection.metric not in keys:
        keys += (selection.metric, )
    return name, keys


def curve_panels(workdir: str) -> list[Panel]:
    """One panel per metric of the run's objective that `metrics.jsonl` has values for."""
    wd = Workdir(workdir)
    name, keys = objective_metrics(wd)
    metrics = wd.read_metrics()
    panels = []
    for key in keys:
        train = tuple((m["step"], m[key]) for m in metrics if m.get(key) is not None)
        held_out = tuple(
            (m["step"], m[f"eval_{key}"]) for m in metrics if m.get(f"eval_{key}") is not None)
        if train or held_out:
            panels.append(Panel(f"{name.upper()} {key}", train, held_out))
    return panels


def plot_curves(workdir: str, out_path: str | None = None) -> str | None:
    """Writes `<workdir>/curves.png` (or `out_path`); returns the path, None if nothing is logged."""
    panels = curve_panels(workdir)
    if not panels:
        return None
    import matplotlib
    matplotlib.use("Agg")  # files only: runs on headless TPU VMs and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel.train:
            ax.plot(*zip(*panel.train), label="train")
        if panel.held_out:
            ax.plot(*zip(*panel.held_out), "o-", label="held-out")
        ax.set_xlabel("step")
        ax.set_title(panel.title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out_path = out_path or os.path.join(workdir, "curves.png")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(out_path, png.getvalue())  # the workdir may be gs://
    return out_path

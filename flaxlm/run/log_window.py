"""The training metrics a logged line shows: means over the steps since the previous line.

A single step's loss is as noisy as its batch; the line at step s instead carries the mean of
every applied step's value since the previous line on the grid, the multiples of `train.log_every`
and of `train.eval_every` (a line the run's last step or a signal adds off that grid shows the steps
so far and leaves the window open), the way transformers' Trainer logs its loss. An evaluation
always closes a window, so the lines between two evaluations cover exactly the steps between them. So `metrics.jsonl`, TensorBoard, the progress bar and
results.json's per-epoch `train_loss` are window means that compare with another framework's epoch
mean. A skipped (non-finite) step stays out of the mean. The learning rate and the skipped count
are the logged step's own: they are state, not samples.

The open window travels in the checkpoint's metadata, so a resumed or extended run logs exactly
the lines of an uninterrupted one (tests/test_train.py).
"""

from __future__ import annotations

from typing import Mapping

# Values that describe the run's state at the logged step rather than a sample of it.
STEP_STATE_KEYS = ("learning_rate", "skipped")


class LogWindow:
    def __init__(self, saved: Mapping | None = None):
        """`saved`: `state()` as a checkpoint's metadata recorded it (None: an empty window)."""
        saved = saved or {}
        self.steps = int(saved.get("steps", 0))
        self.sums: dict[str, float] = {k: float(v) for k, v in saved.get("sums", {}).items()}

    def add(self, values: Mapping[str, float]) -> None:
        """One applied step's metrics."""
        self.steps += 1
        for key, value in values.items():
            if key not in STEP_STATE_KEYS:
                self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def means(self, step_values: Mapping[str, float]) -> dict[str, float]:
        """The logged step's `step_values` with every sampled metric replaced by its window mean
        (unchanged when no step of the window was applied), plus `log_window_steps`."""
        if not self.steps:
            return {**step_values, "log_window_steps": 0}
        means = {
            k: (self.sums[k] / self.steps if k in self.sums else v)
            for k, v in step_values.items()
        }
        return {**means, "log_window_steps": self.steps}

    def reset(self) -> None:
        self.steps, self.sums = 0, {}

    def state(self) -> dict:
        """What a checkpoint records, for `LogWindow(saved)` on resume."""
        return {"steps": self.steps, "sums": dict(self.sums)}

"""How many skipped updates `train.nan_policy=skip` tolerates before the run stops.

A step whose loss or gradients are not finite leaves params and optimizer state untouched
(`steps.py`), which is right for a rare bad batch. A run where it keeps happening is not
training: left alone, it would count its steps to the end, print "done", and write checkpoints
that rotate out the ones written before the trouble. So the loop reports every step's flag here
(one step late, as it fetches metrics) and the run stops with one line when either
  * `train.max_skipped_in_a_row` consecutive updates were skipped (0: no limit), or
  * at a checkpoint, more than `train.max_skipped_share` of the updates since the previous
    checkpoint of this run (or since it started) were skipped;
in both cases before that checkpoint is written, so no checkpoint comes from such a stretch.
"""

from __future__ import annotations

from flaxlm.errors import FlaxlmError


class SkippedUpdates:
    def __init__(self, *, max_in_a_row: int, max_share: float, start_step: int,
                 last_checkpoint: int | None):
        self.max_in_a_row, self.max_share = max_in_a_row, max_share
        self.in_a_row = 0
        self.window_start, self.skipped_in_window = start_step, 0
        self.last_checkpoint = last_checkpoint

    def _newest(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written"
        return f"the newest checkpoint is step {self.last_checkpoint}"

    def observe(self, step: int, applied: bool) -> None:
        """Step `step`'s update was applied (or skipped); raises once too many were skipped."""
        self.in_a_row = 0 if applied else self.in_a_row + 1
        self.skipped_in_window += not applied
        if self.max_in_a_row and self.in_a_row >= self.max_in_a_row:
            raise FlaxlmError(
                f"stopped at step {step}: the last {self.in_a_row} updates (steps "
                f"{step - self.in_a_row + 1}–{step}) were skipped for a non-finite loss or "
                f"gradient (train.max_skipped_in_a_row={self.max_in_a_row}); nothing was saved "
                f"from them and {self._newest()}: lower train.learning_rate or check the data")

    def before_checkpoint(self, step: int) -> None:
        """Raises instead of letting step `step` be saved when too many updates since the last
        checkpoint were skipped; call after `observe(step, …)`."""
        steps = step - self.window_start
        if steps > 0 and self.skipped_in_window > self.max_share * steps:
            raise FlaxlmError(
                f"stopped at step {step} without saving it: {self.skipped_in_window} of the "
                f"{steps} updates since step {self.window_start} were skipped for a non-finite "
                f"loss or gradient, more than train.max_skipped_share={self.max_share}; "
                f"{self._newest()}: lower train.learning_rate or check the data")

    def checkpointed(self, step: int) -> None:
        self.window_start, self.skipped_in_window = step, 0
        self.last_checkpoint = step

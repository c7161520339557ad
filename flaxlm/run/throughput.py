"""Throughput and MFU from real work: non-padding tokens and real predictions, never padded slots.

Counts come from the host batches (the objective's `real_counts`, a numpy count per step, no device
sync); with several processes each counts its own rows and the total is that × process count.
The window starts after the first step has finished, so compilation is never timed, and time
spent in evaluation is taken out. `mfu_slots` is logged beside `mfu` for comparison: the same
formula over every slot of the padded batch (all positions, all prediction slots).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

Counts = Mapping[str, float]


class Throughput:
    def __init__(self, flops: Callable[[Counts], float], slot_counts: Counts, peak_flops: float,
                 process_count: int):
        self._flops, self._slot_counts = flops, dict(slot_counts)
        self.peak_flops, self.process_count = peak_flops, process_count
        self._counts: dict[str, float] = {}
        self._steps = 0
        self._start: float | None = None

    def start(self) -> None:
        """Open a window now (after the first, compiling step has finished)."""
        self._counts, self._steps, self._start = {}, 0, time.perf_counter()

    def add(self, host_counts: Counts) -> None:
        if self._start is None:
            return  # before the window opens: the compiling step is not counted
        for key, value in host_counts.items():
            self._counts[key] = self._counts.get(key, 0.0) + value * self.process_count
        self._steps += 1

    def exclude(self, seconds: float) -> None:
        """Time spent on something other than training (evaluation) leaves the window."""
        if self._start is not None:
            self._start += seconds

    def measure(self) -> dict[str, float]:
        """Rates over the window since the last call; the next window starts now."""
        if self._start is None:
            return {}
        seconds = time.perf_counter() - self._start
        counts, steps = self._counts, self._steps
        self.start()
        if steps == 0 or seconds <= 0:
            return {}
        out = {"steps_per_sec": steps / seconds}
        for key, value in counts.items():
            out[f"{key}_per_sec"] = value / seconds
        if self.peak_flops:
            out["mfu"] = self._flops(counts) / seconds / self.peak_flops
            slots = {k: v * steps for k, v in self._slot_counts.items()}
            out["mfu_slots"] = self._flops(slots) / seconds / self.peak_flops
        return out

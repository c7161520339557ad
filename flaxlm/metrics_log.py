"""Where metrics go: `<workdir>/metrics.jsonl`, TensorBoard event files, and the console."""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

from tensorboardX import SummaryWriter


class MetricsLog:
    """Writes only on process 0; other processes get a no-op writer."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, float) and math.isfinite(v) else
                     None if isinstance(v, float) else v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")
        self._file.flush()
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._tb.add_scalar(key, value, step)
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """Every record of `<workdir>/metrics.jsonl`; a torn last line is dropped with a warning."""
    from flaxlm.workdir import read_metrics_lines
    return read_metrics_lines(os.path.join(workdir, "metrics.jsonl"))

"""Where metrics go: `<workdir>/metrics.jsonl`, TensorBoard event files, and the console.

In a bucket (`gs://`) objects cannot be appended to: the log keeps its lines and rewrites the
object at every write (a run logs at most a few thousand small lines); TensorBoard's event file is
written locally and uploaded whole after every write, through the same `flaxlm.storage` as every
other file (tensorboardX's own `gs://` writer re-uploads on garbage collection, after a run).
"""

from __future__ import annotations

import json
import math
import tempfile
from typing import Mapping

from tensorboardX import SummaryWriter

from flaxlm import storage
from flaxlm.run.workdir import Workdir


class MetricsLog:
    """Writes only on process 0; other processes get a no-op writer."""
    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        wd = Workdir(workdir)
        self.path = wd.metrics_file
        self._tb_remote = None
        if storage.is_remote(workdir):
            self._remote_text = storage.read_text(self.path) if storage.exists(self.path) else ""
            self._file = None
            self._tb_remote = wd.tensorboard_dir
            self._tb_local = tempfile.TemporaryDirectory(prefix="flaxlm-tensorboard-")
            self._tb = SummaryWriter(self._tb_local.name)
        else:
            self._file = open(self.path, "a", encoding="utf-8")
            self._tb = SummaryWriter(wd.tensorboard_dir)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {
            k: (float(v) if isinstance(v, float) and math.isfinite(v) else
                None if isinstance(v, float) else v)
            for k, v in metrics.items()
        }
        line = json.dumps({"step": step, **clean}) + "\n"
        if self._file is None:
            self._remote_text += line
            storage.write_text(self.path, self._remote_text)
        else:
            self._file.write(line)
            self._file.flush()
        for key, value in metrics.items():
            # A skipped step's NaN loss is null in metrics.jsonl and a gap in TensorBoard
            # (tensorboardX would print a warning per value).
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value)):
                self._tb.add_scalar(key, value, step)
        self._tb.flush()
        if self._tb_remote is not None:
            storage.copy_tree(self._tb_local.name, self._tb_remote)

    def close(self) -> None:
        if self.enabled:
            if self._file is not None:
                self._file.close()
            self._tb.close()
            if self._tb_remote is not None:
                storage.copy_tree(self._tb_local.name, self._tb_remote)
                self._tb_local.cleanup()

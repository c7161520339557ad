"""The run's log file: library warnings and errors, with their tracebacks, for whoever debugs a run.

Orbax writes checkpoints on background threads and logs a failure there with its full traceback
(absl → Python logging) before the loop learns of it; flaxlm then ends the run with one line
naming the checkpoint and the cause. So while `train` runs, every warning or error logged through
Python's `logging` goes to `<workdir>/logs/train.process<i>.log`, and the terminal shows what it
showed before except orbax's records. A `gs://` workdir's log is written locally and uploaded
when the run ends (objects cannot be appended to), as `logs/train.process<i>.<UTC time>.log`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import tempfile
from typing import Iterator

import jax

from flaxlm import storage
from flaxlm.run.workdir import Workdir

_ORBAX_SOURCE = os.sep + os.path.join("orbax", "checkpoint") + os.sep
_active: list[str] = []  # the log file of the run in progress, as the user should see it
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(threadName)s %(pathname)s:%(lineno)d] %(message)s"


def _for_the_terminal(record: logging.LogRecord) -> bool:
    return _ORBAX_SOURCE not in record.pathname and not getattr(record, "log_file_only", False)


class _Terminal(logging.Handler):
    """What Python prints without any handler (`logging.lastResort`), less orbax's records;
    writes to the current `sys.stderr`, as lastResort does."""
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.addFilter(_for_the_terminal)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


def active_file() -> str | None:
    """The log file of the run in progress (None outside `library_logs_to_file`)."""
    return _active[-1] if _active else None


class _LogFile(logging.FileHandler):
    """Appends; the file (and its directory) is made at the first record, so a run that logs
    nothing, or is refused before it starts, leaves no trace in the workdir."""
    def __init__(self, path: str) -> None:
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self):
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        return super()._open()


@contextlib.contextmanager
def library_logs_to_file(workdir: str) -> Iterator[str]:
    """Yields the log file's path as the user should see it (in the workdir)."""
    name = f"train.process{jax.process_index()}"
    remote = storage.is_remote(workdir)
    if remote:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        shown = os.path.join(Workdir(workdir).logs_dir, f"{name}.{stamp}.log")
        local_dir = tempfile.mkdtemp(prefix="flaxlm-log-")
        local = os.path.join(local_dir, "train.log")
    else:
        local = shown = os.path.join(Workdir(workdir).logs_dir, f"{name}.log")
    to_file = _LogFile(local)
    to_file.setLevel(logging.WARNING)
    to_file.setFormatter(logging.Formatter(_FORMAT))
    root = logging.getLogger()
    # Where Python would print through lastResort, a handler that prints the same less orbax's
    # records; where a library already installed a console handler (a `logging.basicConfig`),
    # that handler is filtered the same way for the run.
    terminal = _Terminal() if not root.handlers else None
    consoles = [
        h for h in root.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    for handler in consoles:
        handler.addFilter(_for_the_terminal)
    root.addHandler(to_file)
    if terminal is not None:
        root.addHandler(terminal)
    _active.append(shown)
    try:
        yield shown
    finally:
        _active.pop()
        if terminal is not None:
            root.removeHandler(terminal)
        for handler in consoles:
            handler.removeFilter(_for_the_terminal)
        root.removeHandler(to_file)
        to_file.close()
        if remote and _upload(local, shown):
            with contextlib.suppress(OSError):
                if os.path.exists(local):
                    os.remove(local)
                os.rmdir(local_dir)


def _upload(local: str, remote: str) -> bool:
    """Uploads a non-empty log; False (and one line saying where it stayed) if that failed."""
    if not os.path.exists(local) or not os.path.getsize(local):
        return True
    try:
        with open(local, "rb") as f:
            storage.write_bytes(remote, f.read())
        return True
    except Exception as e:  # noqa: BLE001 - the run's own error, if any, must stay the one shown
        print(
            f"flaxlm: the log file could not be uploaded to {remote} ({type(e).__name__}); "
            f"it is at {local}", file=sys.stderr)
        return False

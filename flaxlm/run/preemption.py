"""Stopping a run cleanly on SIGTERM/SIGINT: finish the step, checkpoint, exit."""

from __future__ import annotations

import contextlib
import signal

import jax
from jax.experimental import multihost_utils


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, checkpoints and exits cleanly.

    With several processes every host must checkpoint the same step, but a signal reaches hosts at
    different steps. There SIGTERM is left to JAX's preemption service (started by
    `jax.distributed.initialize`), which agrees on one step for all hosts: `poll` turns its
    `reached_preemption_sync_point` into the stop flag. SIGINT keeps its default there (the
    process exits without a checkpoint and launch/local.py stops the others).
    """
    def __init__(self):
        self.signal_name: str | None = None
        self.synced = jax.process_count() > 1 and _has_preemption_service()

    def poll(self, step: int) -> None:
        if self.synced and multihost_utils.reached_preemption_sync_point(step):
            self.signal_name = self.signal_name or "SIGTERM"

    @contextlib.contextmanager
    def installed(self):
        import threading
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        signals = () if self.synced else (signal.SIGTERM, signal.SIGINT)
        previous = {s: signal.getsignal(s) for s in signals}

        def handler(signum, _frame):
            self.signal_name = signal.Signals(signum).name

        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _has_preemption_service() -> bool:
    try:
        multihost_utils.reached_preemption_sync_point(-1)  # raises without the service
        return True
    except RuntimeError:
        return False

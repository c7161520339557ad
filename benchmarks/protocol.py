"""Workers and the line protocol between the coordinator and them (standard library only).

Every measured thing runs in a *worker*: a runner object built from a JSON spec that answers
`run(n)` with a dict of measurements. A worker lives in its own process by default (each framework
gets a clean thread pool and memory is returned when it exits; the HF Flax baseline needs another
Python altogether) or in-process for `--smoke`. Because workers stay alive between calls, the
coordinator can interleave rounds of two workers, so machine load that drifts during a run hits
both sides of a ratio alike.

Wire format: one JSON object per line. Worker replies start with `@@bench ` so that library noise
on stdout cannot be mistaken for a reply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable

REPLY = "@@bench "


class WorkerError(RuntimeError):
    pass


# -- worker side ---------------------------------------------------------------------------------
def serve(build: Callable[[dict], Any]) -> None:
    """Worker main loop: read the spec, build the runner, answer commands until `quit`."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the libraries print goes to stderr, not into replies

    def reply(obj: dict) -> None:
        out.write(REPLY + json.dumps(obj) + "\n")
        out.flush()

    try:
        spec = json.loads(sys.stdin.readline())
        start = time.perf_counter()
        runner = build(spec)
        info = dict(getattr(runner, "info", {}))
        info.setdefault("setup_s", time.perf_counter() - start)
        reply({"ok": True, "info": info})
    except Exception as e:  # noqa: BLE001 - reported to the coordinator as the row's reason
        reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        try:
            reply({"ok": True, "result": getattr(runner, cmd["cmd"])(**cmd.get("args", {}))})
        except Exception as e:  # noqa: BLE001
            reply({"ok": False, "error": f"{type(e).__name__}: {e}"})
    close = getattr(runner, "close", None)
    if close:
        close()


# -- coordinator side ----------------------------------------------------------------------------
class ProcessWorker:
    """A runner in a child process (`python -m module`, cwd = repository root)."""
    def __init__(self, module: str, spec: dict, *, python: str = sys.executable,
                 env: dict | None = None, timeout_s: float = 1800, log=None):
        self.name = spec.get("name", module)
        self.timeout_s = timeout_s
        self.log = log
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen([python, "-m", module], cwd=root, env={
            **os.environ,
            **(env or {})
        }, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        self._stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        self.info = self._read()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-40]

    def _read(self) -> Any:
        deadline = time.time() + self.timeout_s
        while True:
            line = self.proc.stdout.readline()
            if not line:
                tail = "".join(self._stderr[-8:]).strip()
                raise WorkerError(f"{self.name}: worker exited (rc={self.proc.poll()}): {tail}")
            if line.startswith(REPLY):
                msg = json.loads(line[len(REPLY):])
                if not msg["ok"]:
                    raise WorkerError(f"{self.name}: {msg['error']}")
                return msg.get("info", msg.get("result"))
            if time.time() > deadline:
                raise WorkerError(f"{self.name}: no reply in {self.timeout_s:.0f} s")

    def call(self, cmd: str, **args) -> Any:
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class LocalWorker:
    """The same interface, in this process (smoke runs: no interpreter start-ups)."""
    def __init__(self, build: Callable[[dict], Any], spec: dict):
        self.name = spec.get("name", "local")
        start = time.perf_counter()
        try:
            self.runner = build(spec)
        except Exception as e:  # noqa: BLE001
            raise WorkerError(f"{self.name}: {type(e).__name__}: {e}") from e
        self.info = dict(getattr(self.runner, "info", {}))
        self.info.setdefault("setup_s", time.perf_counter() - start)

    def call(self, cmd: str, **args) -> Any:
        try:
            return getattr(self.runner, cmd)(**args)
        except Exception as e:  # noqa: BLE001
            raise WorkerError(f"{self.name}: {type(e).__name__}: {e}") from e

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if close:
            close()

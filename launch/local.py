"""Run one flaxlm command as N JAX processes on this machine (CPU devices, gloo collectives).

  python launch/local.py --num-processes 2 --devices-per-process 2 -- \
      train --config configs/tiny.py --workdir runs/tiny-2x2 --config.data.tokenizer=runs/tok

Each process gets `XLA_FLAGS=--xla_force_host_platform_device_count=D` and `JAX_PLATFORMS=cpu`
and starts `launch/multihost.py` with a free localhost port as coordinator. Process 0's output is
streamed here; the others' go to `<log-dir>/process_<i>.log`. If any process fails, the others are
stopped, the failing process's last lines are printed and the launcher exits with its code.
SIGINT/SIGTERM are passed on to every process (the trainer checkpoints and exits).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

MULTIHOST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost.py")
_GRACE_SECONDS = 20


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def process_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [
        f for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def launch(num_processes: int, devices_per_process: int, flaxlm_args: list[str],
           log_dir: str | None = None) -> int:
    log_dir = log_dir or tempfile.mkdtemp(prefix="flaxlm-local-")
    os.makedirs(log_dir, exist_ok=True)
    coordinator = f"localhost:{free_port()}"
    env = process_env(devices_per_process)
    procs: list[subprocess.Popen] = []
    logs: list[str | None] = []
    for i in range(num_processes):
        cmd = [
            sys.executable, MULTIHOST, "--coordinator", coordinator, "--num-processes",
            str(num_processes), "--process-id",
            str(i), "--", *flaxlm_args
        ]
        if i == 0:
            logs.append(None)
            procs.append(subprocess.Popen(cmd, env=env))
        else:
            path = os.path.join(log_dir, f"process_{i}.log")
            logs.append(path)
            with open(path, "wb") as out:
                procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i = failed[0]
                _stop(procs)
                where = f" (log {logs[i]})" if logs[i] else ""
                tail = _tail(logs[i]) if logs[i] else ""
                print(
                    f"launch/local.py: process {i} of {num_processes} exited with code "
                    f"{codes[i]}{where}; stopped the others", file=sys.stderr, flush=True)
                if tail:
                    print(f"--- last lines of process {i} ---\n{tail.rstrip()}", file=sys.stderr,
                          flush=True)
                return codes[i]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop(procs)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM the processes still running (a peer blocked in a collective never returns), then
    SIGKILL after a grace period."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.monotonic() + _GRACE_SECONDS
    for p in alive:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="launch/local.py",
        description="Run a flaxlm command as N local JAX processes (CPU devices, gloo).")
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--devices-per-process", type=int, default=1)
    parser.add_argument("--log-dir", help="where processes 1..N-1 log (default: a temp dir)")
    parser.add_argument("flaxlm_args", nargs=argparse.REMAINDER,
                        help="-- then the flaxlm command, e.g. -- train --config ...")
    args = parser.parse_args(argv)
    rest = args.flaxlm_args[1:] if args.flaxlm_args[:1] == ["--"] else args.flaxlm_args
    if not rest:
        parser.error("no flaxlm command given (e.g. -- train --config C --workdir W)")
    if args.num_processes < 1 or args.devices_per_process < 1:
        parser.error("--num-processes and --devices-per-process must be at least 1")
    return launch(args.num_processes, args.devices_per_process, rest, args.log_dir)


if __name__ == "__main__":
    sys.exit(main())

"""The run directory's own files: write probes, free space, `config.json`, `metrics.jsonl` repair.

Everything here runs before anything compiles, and reports a damaged file as one line that names
it, without touching the workdir.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import jax

from flaxlm import storage
from flaxlm.errors import FlaxlmError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


def probe_writable(workdir: str) -> None:
    """Fail before compiling if the workdir cannot take a file."""
    if storage.is_remote(workdir):
        probe = os.path.join(workdir, f".write_probe.{jax.process_index()}")
        try:
            storage.write_text(probe, "probe")
            storage.remove(probe)
        except Exception as e:  # noqa: BLE001 - gcsfs raises HttpError, OSError, ValueError, ...
            raise FlaxlmError(f"workdir {workdir} is not writable: {str(e).splitlines()[0]}; "
                              "check the bucket exists and this VM's service account may write "
                              "objects to it") from None
        return
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe.{jax.process_index()}")
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise FlaxlmError(f"workdir {workdir} is not writable: {e.strerror}") from None


def check_free_space(workdir: str, state_bytes: int, keep: int) -> None:
    """Refuse to start a run whose checkpoints cannot fit, instead of failing mid-save."""
    # An async save holds one new checkpoint next to the kept ones until it commits.
    if storage.is_remote(workdir):
        return  # a bucket has no free space to run out of
    needed = state_bytes * (keep + 1)
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise FlaxlmError(f"workdir {workdir} has {free / 2**20:.0f} MiB free but {keep} kept "
                          f"checkpoints plus one in flight need ~{needed / 2**20:.0f} MiB; free "
                          "space or lower train.keep_checkpoints")


def write_json_atomic(path: str, data: dict) -> None:
    storage.write_text(path, json.dumps(data, indent=2, sort_keys=True))


def read_run_config(workdir: str) -> dict | None:
    """The workdir's `config.json` (None if there is none); a damaged one is a one-line error."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not storage.exists(path):
        return None
    try:
        saved = json.loads(storage.read_text(path))
        if not isinstance(saved, dict) or not isinstance(saved.get("model", {}), dict):
            raise ValueError("not a JSON object with a 'model' object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = f"line {e.lineno} column {e.colno}: {e.msg}" if isinstance(
            e, json.JSONDecodeError) else str(e)
        raise FlaxlmError(
            f"{path} is damaged ({reason}); it records the run this workdir holds, so flaxlm "
            "will not overwrite it: restore it from a copy, or train into a new --workdir"
        ) from None
    return saved


def check_same_model(workdir: str, saved: dict | None, requested: dict,
                     fields: tuple[str, ...]) -> None:
    """A workdir's checkpoints fit only the model shapes it was created with."""
    if not saved:
        return
    model = saved.get("model", {})
    differing = [k for k in fields if k in model and model[k] != requested.get(k)]
    if differing:
        details = ", ".join(f"model.{k}: saved {model[k]!r} vs requested "
                            f"{requested.get(k)!r}" for k in differing)
        raise FlaxlmError(f"{workdir} holds a run with a different model ({details}); "
                          "use a new --workdir or the saved settings")


def read_metrics_lines(path: str) -> list[dict]:
    """The records of a metrics file; a torn final line (a kill mid-write) is dropped with a
    warning, a damaged line elsewhere is an error naming it."""
    if not storage.exists(path):
        return []
    lines = [line for line in _read_lines(path) if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if number == len(lines):
                warnings.warn(f"{path}: dropped a torn last line {number} ({line.strip()[:40]!r}); "
                              "a run was interrupted while writing it")
                break
            raise FlaxlmError(f"{path} line {number} is damaged ({e}); fix or remove that "
                              "line to resume") from None
        records.append(record)
    return records


def truncate_metrics(workdir: str, after_step: int) -> None:
    """Drop log lines a killed run wrote past its last checkpoint (and a torn last line); the
    resumed run rewrites them."""
    path = os.path.join(workdir, METRICS_FILE)
    if not storage.exists(path):
        return
    records = read_metrics_lines(path)
    kept = [r for r in records if r.get("step", 0) <= after_step]
    unchanged = len(kept) == len([line for line in _read_lines(path) if line.strip()])
    if not unchanged:
        storage.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _read_lines(path: str) -> list[str]:
    with storage.open_file(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace").splitlines(keepends=True)


def read_json_or_none(path: str) -> dict | None:
    """A small JSON file flaxlm wrote (e.g. best.json); a damaged one is a one-line error."""
    if not storage.exists(path):
        return None
    try:
        return json.loads(storage.read_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FlaxlmError(f"{path} is damaged ({e}); remove it to continue") from None


def check_same_tokenizer(source: str, workdir_tokenizer: str) -> None:
    """A workdir's checkpoints were trained on its tokenizer's ids: a different tokenizer for the
    same workdir is refused, never copied over it or mixed with its files."""
    if not storage.isdir(workdir_tokenizer) or same_path(source, workdir_tokenizer):
        return
    for name in sorted(storage.listdir(source)):
        theirs, ours = os.path.join(source, name), os.path.join(workdir_tokenizer, name)
        if storage.isfile(theirs) and storage.isfile(ours) and not storage.same_bytes(
                theirs, ours):
            raise FlaxlmError(
                f"data.tokenizer={source} differs from the tokenizer this workdir was trained "
                f"with ({workdir_tokenizer}: {name} differs); use that tokenizer or a new "
                "--workdir")


def same_path(a: str, b: str) -> bool:
    if storage.is_remote(a) or storage.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.abspath(a) == os.path.abspath(b)

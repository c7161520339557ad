"""Telling a damaged checkpoint from a changed run, and setting damaged ones aside.

Disks, copies between buckets and interrupted rsyncs leave step directories whose files orbax and
tensorstore cannot decode. Such a failure is described in one line (step, file, reason); a
training workdir renames the step directory to `<step>.unreadable` (never deletes it; orbax only
lists directories named by a bare step number) and falls back to the next older checkpoint.

A checkpoint whose state *tree* differs from the one the run builds is intact: the run's settings
changed (e.g. `train.max_grad_norm` 0 ↔ > 0 adds or removes the clipping state in the optax
chain). It is refused with the differing path named and left where it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
from typing import Any, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from flaxlm import storage
from flaxlm.errors import FlaxlmError
from flaxlm.run.workdir import Workdir

UNREADABLE_SUFFIX = ".unreadable"
_REASON_CHARS = 200
_ORBAX_SOURCE = os.sep + os.path.join("orbax", "checkpoint") + os.sep
_silenced = False
# tensorstore's error for a chunk it cannot decode names the array and the database directory;
# the reason may name the file inside it.
_TENSORSTORE_READ = re.compile(r'Error reading "(?P<key>[^"]*)" in \w+ database at local file '
                               r'"(?P<path>[^"]*)": (?P<reason>[^\n]*)')
_LOCAL_FILE = re.compile(r'(?: of)? local file "(?P<path>[^"]*)"')
_NOISE_TAIL = re.compile(r"( \[tensorstore_spec=|; at byte ).*")
# Orbax's JSON files in a step directory (its _CHECKPOINT_METADATA is optional: a garbled one is
# ignored by orbax, so it is not blamed).
_JSON_FILES = ("_METADATA", "_sharding", "metadata")


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """Why the checkpoint at `step` could not be read (or was read back with other values)."""
    step: int
    file: str  # relative to the workdir where possible, e.g. checkpoints/20/train
    reason: str
    kind: str = "unreadable"  # or "damaged": it decoded, but not to the values that were saved

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class DamageFound(Exception):
    """Raised by a checkpoint read whose arrays decoded to values other than those saved."""
    def __init__(self, found: Unreadable):
        super().__init__(str(found))
        self.found = found


def _is_abandoned_read_report(unraisable: Any) -> bool:
    exc, obj = unraisable.exc_value, unraisable.object
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    return _ORBAX_SOURCE in getattr(getattr(obj, "cr_code", None), "co_filename", "")


def _drop_abandoned_read_logs(record: logging.LogRecord) -> bool:
    return _ORBAX_SOURCE not in record.getMessage()


def silence_abandoned_reads() -> None:
    """Installed before the first restore that may fail. Orbax stops at the first failed array
    read and closes its event loop with the other reads still in flight; each of those later
    reports "Event loop is closed" from a tensorstore thread, or a never-retrieved exception when
    its task is collected, at moments nobody controls (even before the failure reaches the
    caller). So for the rest of the process exactly those reports are dropped; every other
    unraisable exception and asyncio log still shows."""
    global _silenced
    if _silenced:
        return
    _silenced = True
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _is_abandoned_read_report(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_drop_abandoned_read_logs)


@contextlib.contextmanager
def quiet_orbax() -> Iterator[None]:
    """Orbax logs a failed read (and the content of a garbled metadata file) through absl before
    raising; the caller reports the failure in one line instead."""
    silence_abandoned_reads()
    absl_logger = logging.getLogger("absl")

    def drop(_record: logging.LogRecord) -> bool:
        return False

    absl_logger.addFilter(drop)
    try:
        yield
    finally:
        absl_logger.removeFilter(drop)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _relative(path: str, workdir: str) -> str:
    path = os.path.normpath(path)
    rel = os.path.relpath(path, os.path.abspath(workdir))
    return path if rel.startswith("..") else rel


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 1] + "…"


def read_failure(exc: Exception, step: int, workdir: str) -> Unreadable:
    """The file and reason of a failed read of checkpoint `step`.

    Re-raises failures that are not the checkpoint's fault, so that an intact checkpoint is never
    set aside for them: device memory exhausted while restoring, and files this user may not read.
    """
    if isinstance(exc, DamageFound):
        return exc.found
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e):
            raise exc
        if isinstance(e, PermissionError):
            raise FlaxlmError(f"cannot read checkpoint {step}: {e.filename}: permission denied; "
                              "fix the file permissions and rerun") from None
    step_dir = os.path.join(Workdir(workdir).checkpoints_dir, str(step))
    for e in chain:
        m = _TENSORSTORE_READ.search(str(e))
        if m:
            path, reason = m["path"], _NOISE_TAIL.sub("", m["reason"])
            inner = _LOCAL_FILE.search(reason)
            if inner:
                path, reason = inner["path"], _LOCAL_FILE.sub("", reason)
            if str(e).startswith("NOT_FOUND"):
                reason += ": not found"
            array = m["key"].rsplit("/", 1)[0]
            return Unreadable(step, _relative(path, workdir), _clip(f"array {array}: {reason}"))
    for e in chain:
        m = re.search(r'local file "(?P<path>[^"]*)": (?P<reason>[^\n]*)', str(e))
        if m:
            return Unreadable(step, _relative(m["path"], workdir),
                              _clip(_NOISE_TAIL.sub("", m["reason"])))
        if isinstance(e, OSError) and e.filename:
            return Unreadable(step, _relative(str(e.filename), workdir), _clip(e.strerror
                                                                               or str(e)))
        if isinstance(e, json.JSONDecodeError):
            bad = _first_invalid_json(step_dir)
            return Unreadable(step, _relative(bad or step_dir, workdir),
                              _clip(f"not valid JSON ({e})"))
    innermost = chain[-1]
    message = (str(innermost).strip().splitlines() or [""])[0]
    file = step_dir
    m = re.search(re.escape(os.path.abspath(workdir)) + r"[^\s\"']*", message)
    if m:
        file = m[0].rstrip(".")
        message = message.replace(m[0], os.path.basename(file))
    return Unreadable(step, _relative(file, workdir),
                      _clip(f"{type(innermost).__name__}: {message}"))


def _first_invalid_json(step_dir: str) -> str | None:
    if storage.is_remote(step_dir):
        return None  # a diagnosis only: a bucket's damage is reported by orbax's own error
    for root, _, files in sorted(os.walk(step_dir)):
        for name in sorted(files):
            if name in _JSON_FILES or os.path.basename(root) == "array_metadatas":
                path = os.path.join(root, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        json.load(f)
                except (OSError, ValueError):
                    return path
    return None


def failed_processes(failed: bool) -> list[int]:
    """The processes for which `failed` holds. Orbax restores are collective, so every process
    must skip the same checkpoints; this is also the barrier after process 0 renames one."""
    if jax.process_count() == 1:
        return [0] if failed else []
    flags = np.asarray(multihost_utils.process_allgather(np.int32(failed))).ravel()
    return [i for i, f in enumerate(flags) if f]


def set_aside(directory: str, step: int) -> str:
    """Renames `directory/<step>` to `<step>.unreadable` (or `.unreadable.N` if that is taken)."""
    name, n = f"{step}{UNREADABLE_SUFFIX}", 1
    while storage.exists(os.path.join(directory, name)) or os.path.lexists(
            os.path.join(directory, name)):
        n += 1
        name = f"{step}{UNREADABLE_SUFFIX}.{n}"
    try:
        storage.rename(os.path.join(directory, str(step)), os.path.join(directory, name))
    except OSError as e:
        raise FlaxlmError(f"checkpoint {step} in {directory} is unreadable and could not be "
                          f"renamed to {name} ({e.strerror or e}); move it out of {directory} by "
                          "hand and rerun") from None
    return name


def set_aside_names(directory: str) -> list[str]:
    if not storage.isdir(directory):
        return []
    return sorted((n for n in storage.listdir(directory) if UNREADABLE_SUFFIX in n), key=lambda n:
                  (len(n), n))


def nothing_intact(directory: str, found: list[Unreadable], moved: list[str]) -> FlaxlmError:
    what = "; ".join(f"{u.step} ({u})" for u in found)
    if moved:
        return FlaxlmError(f"{directory}: no intact checkpoint: {what}; set aside as "
                           f"{', '.join(moved)}. Restore them from a copy, or start over in a new "
                           "--workdir")
    return FlaxlmError(f"{directory}: no intact checkpoint: {what}; nothing was changed. Restore "
                       "the checkpoints from a copy")


def _key_name(key: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def tree_shapes(tree: Any, prefix: str = "") -> dict[str, tuple]:
    """`{"opt_state.1.0.mu.encoder…": shape}` for a state tree or orbax's metadata of one; tuple
    indices, namedtuple fields and dict keys all become path parts, so the two compare."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        prefix + ".".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
        for path, leaf in flat
    }


def check_tree(saved: dict[str, tuple], requested: dict[str, tuple], *, step: int, directory: str,
               max_grad_norm: Any = None) -> None:
    """Refuses (FlaxlmError) a checkpoint whose state paths or shapes differ from the run's."""
    only_saved = sorted(saved.keys() - requested.keys())
    only_requested = sorted(requested.keys() - saved.keys())
    reshaped = sorted(k for k in saved.keys() & requested.keys() if saved[k] != requested[k])
    differing = only_saved + only_requested + reshaped
    if not differing:
        return
    if only_saved:
        what = f"{only_saved[0]} is in the checkpoint but not in the state this run builds"
    elif only_requested:
        what = f"this run's state has {only_requested[0]}, which the checkpoint lacks"
    else:
        what = (f"{reshaped[0]} has shape {saved[reshaped[0]]} in the checkpoint but "
                f"{requested[reshaped[0]]} in this run")
    if differing[0].startswith("opt_state"):
        saved_value = ("" if max_grad_norm is None else
                       f"; the run that wrote it had train.max_grad_norm={max_grad_norm}")
        likely = ("an optimizer setting changed since it was written (train.max_grad_norm "
                  f"between 0 and > 0 adds or removes the gradient-clipping state{saved_value})")
    else:
        likely = "a model setting changed since it was written"
    raise FlaxlmError(f"checkpoint {step} in {directory} holds a different state tree "
                      f"({what}; {len(differing)} paths differ): {likely}. Rerun with the "
                      "settings that wrote it, or use a new --workdir; the checkpoint is intact "
                      "and was left in place")

"""Every file of a run, named in one place: `Workdir`.

A workdir holds (the layout `flaxlm train` and `flaxlm import` write, unchanged since the first
runs, so every workdir written before still opens):
  config.json     the run: resolved settings ("config"), "model", "head", "objective",
                  "tokenizer" (relative to the workdir), "labels" of a classifier
  tokenizer/      the tokenizer its checkpoints were trained with
  checkpoints/    orbax step directories (`flaxlm.run.checkpoint`)
  best.json       the step of the best evaluation, when the objective selects one
  metrics.jsonl   one JSON record per logged step; tensorboard/ the same as event files
  results.json    what a fine-tuning run measured (`flaxlm.run.results`)
  logs/           library warnings and tracebacks (`flaxlm.run.run_log`)

`Workdir(path)` names these files without reading any; `config.json` is read once, on first use,
and answered through typed accessors (`model`, `head`, `kind`, `tokenizer_dir`, `objective`,
`setting`). `Workdir.open` is an existing run's workdir, checked; `open_or_import` also takes a
Hugging Face model directory. Everything that checks a workdir runs before anything compiles and
reports a damaged file as one line that names it, without touching the workdir.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from typing import Any, Callable

import jax

from flaxlm import storage
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import MODELS

CONFIG_FILE = "config.json"
# config.json's "tokenizer" of a run that keeps its own: relative to the workdir.
OWN_TOKENIZER = "tokenizer"
# The head of an ELECTRA pre-training workdir (generator + discriminator; `flaxlm.convert.electra`
# converts it, `flaxlm.models.electra` builds it): not a `MODELS` entry.
ELECTRA_HEAD = "electra"
SINGLE, ELECTRA_PAIR = "single model", "ELECTRA pair"  # `Workdir.kind`
# `flaxlm import` wrote this objective for classifiers before it wrote the head's own objective.
_OLD_IMPORT_OBJECTIVE = "classify"


class Workdir:
    """A run directory (local or `gs://`): the path of each of its files, and its config.json."""
    def __init__(self, path: str):
        self.path = path
        self._run: dict | None = None
        self._read = False

    def __repr__(self) -> str:
        return f"Workdir({self.path!r})"

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # Layout: names only, nothing is read.
    @property
    def config_file(self) -> str:
        return self._file(CONFIG_FILE)

    @property
    def checkpoints_dir(self) -> str:
        """Absolute when local: orbax needs it so."""
        if storage.is_remote(self.path):
            return self._file("checkpoints")
        return os.path.join(os.path.abspath(self.path), "checkpoints")

    @property
    def own_tokenizer_dir(self) -> str:
        """Where the run keeps its tokenizer (config.json's "tokenizer" names it relatively)."""
        return self._file(OWN_TOKENIZER)

    @property
    def best_file(self) -> str:
        return self._file("best.json")

    @property
    def metrics_file(self) -> str:
        return self._file("metrics.jsonl")

    @property
    def tensorboard_dir(self) -> str:
        return self._file("tensorboard")

    @property
    def results_file(self) -> str:
        return self._file("results.json")

    @property
    def logs_dir(self) -> str:
        """Absolute when local: the log handler opens it after a `chdir` too."""
        return self._file("logs") if storage.is_remote(self.path) else os.path.join(
            os.path.abspath(self.path), "logs")

    def has_checkpoints(self) -> bool:
        return storage.isdir(self.checkpoints_dir)

    # config.json, read once.
    @property
    def run(self) -> dict | None:
        """config.json as written by train / import (None if there is none); a damaged one is a
        one-line error."""
        if not self._read:
            self._run, self._read = read_run_config(self.config_file), True
        return self._run

    def _require_run(self) -> dict:
        if self.run is None:
            raise FlaxlmError(f"{self.path}: no {CONFIG_FILE} (is it a flaxlm workdir?)")
        if not _is_run_config(self.run):
            raise FlaxlmError(f"{self.config_file}: not a flaxlm run config (no \"model\" "
                              "object; a Hugging Face model directory is read by `flaxlm "
                              "import`)")
        return self.run

    def write_config(self, data: dict) -> None:
        write_json_atomic(self.config_file, data)
        self._run, self._read = data, True

    @property
    def saved_model(self) -> ModelConfig:
        """The model config as config.json records it (for an ELECTRA pair: the
        discriminator's, with the arch of its preset)."""
        model_dict = self._require_run()["model"]
        fields = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(model_dict) - fields)
        if unknown:
            raise FlaxlmError(f"{self.config_file}: unknown model field(s) {unknown}")
        try:
            model = ModelConfig(**model_dict)
        except TypeError as e:
            raise FlaxlmError(f"{self.config_file}: not a flaxlm run config ({e!r})") from None
        model.validate()
        return model

    @property
    def model(self) -> ModelConfig:
        """The model its checkpoints hold, as one model is fine-tuned or exported from them."""
        if self.kind == ELECTRA_PAIR:
            # An ELECTRA run's model is its discriminator, whatever arch its preset names
            # ("bert" for the SELECTRA presets): what is fine-tuned from it is an ELECTRA
            # encoder, with ELECTRA's sequence head, exported as transformers' Electra* classes.
            return dataclasses.replace(self.saved_model, arch="electra")
        return self.saved_model

    @property
    def head(self) -> str:
        """The head its checkpoints carry: a key of `MODELS`, or ELECTRA_HEAD. config.json's
        "head", else implied by an MLM objective (workdirs written before heads were named)."""
        run = self._require_run()
        head = run.get("head") or ("mlm" if run.get("objective", "mlm") == "mlm" else None)
        if head != ELECTRA_HEAD and head not in MODELS:
            raise FlaxlmError(f"{self.config_file}: head {head!r} is not one of "
                              f"{', '.join(MODELS)} (objective {run.get('objective')!r}); set "
                              f"\"head\" in {CONFIG_FILE}")
        return head

    @property
    def kind(self) -> str:
        """SINGLE (one model with a head) or ELECTRA_PAIR (generator + discriminator)."""
        return ELECTRA_PAIR if self.head == ELECTRA_HEAD else SINGLE

    @property
    def objective(self) -> str:
        """The objective that wrote the checkpoints (for an import: the one that trains its
        head; "mlm" for workdirs from before objectives were named)."""
        run = self._require_run()
        name = run.get("objective") or "mlm"
        return self.head if name == _OLD_IMPORT_OBJECTIVE else name

    @property
    def tokenizer_dir(self) -> str:
        tokenizer = self._require_run().get("tokenizer") or OWN_TOKENIZER
        if os.path.isabs(tokenizer) or storage.is_remote(tokenizer):
            return tokenizer
        return self._file(tokenizer)

    @property
    def labels(self) -> list | None:
        return self._require_run().get("labels")

    def setting(self, *keys: str) -> Any:
        """A setting of the run that wrote the checkpoints (config.json's "config"), e.g.
        `setting("train", "max_grad_norm")`, or None (no or a damaged config.json, or a workdir
        written without the setting)."""
        try:
            value = self.run or {}
        except FlaxlmError:  # a damaged config.json is reported where the run is read
            return None
        for key in ("config", *keys):
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def refuse_electra_pair(self, needs: str, instead: str) -> None:
        """Uses that need one model stop here, before any weight is read, on an ELECTRA pair."""
        if self.kind == ELECTRA_PAIR:
            raise FlaxlmError(f"{self.path}: an ELECTRA pre-training run (generator + "
                              f"discriminator, head \"{ELECTRA_HEAD}\"); {needs}: {instead}")

    @classmethod
    def open(cls, path: str) -> Workdir:
        """An existing run's workdir, its config.json checked (model, head) before use."""
        wd = cls(path)
        wd._require_run()
        wd.model  # noqa: B018 - a bad model config or head is reported now, not mid-command
        return wd

    # The run's other files.
    def read_best(self) -> dict | None:
        return read_json_or_none(self.best_file)

    def write_best(self, record: dict) -> None:
        write_json_atomic(self.best_file, record)

    def read_results(self) -> dict | None:
        return read_json_or_none(self.results_file)

    def write_results(self, results: dict) -> None:
        write_json_atomic(self.results_file, results)

    def read_metrics(self) -> list[dict]:
        """Every record of metrics.jsonl; a torn last line is dropped with a warning."""
        return read_metrics_lines(self.metrics_file)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop log lines a killed run wrote past its last checkpoint (and a torn last line);
        the resumed run rewrites them."""
        path = self.metrics_file
        if not storage.exists(path):
            return
        records = read_metrics_lines(path)
        kept = [r for r in records if r.get("step", 0) <= after_step]
        unchanged = len(kept) == len([line for line in _read_lines(path) if line.strip()])
        if not unchanged:
            storage.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    # Checks before a run starts.
    def probe_writable(self) -> None:
        """Fail before compiling if the workdir cannot take a file."""
        workdir = self.path
        if storage.is_remote(workdir):
            probe = os.path.join(workdir, f".write_probe.{jax.process_index()}")
            try:
                storage.write_text(probe, "probe")
                storage.remove(probe)
            except Exception as e:  # noqa: BLE001 - gcsfs raises HttpError, OSError, ValueError
                raise FlaxlmError(f"workdir {workdir} is not writable: {str(e).splitlines()[0]}; "
                                  "check the bucket exists and this VM's service account may "
                                  "write objects to it") from None
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

    def check_free_space(self, state_bytes: int, keep: int) -> None:
        """Refuse to start a run whose checkpoints cannot fit, instead of failing mid-save."""
        # An async save holds one new checkpoint next to the kept ones until it commits.
        if storage.is_remote(self.path):
            return  # a bucket has no free space to run out of
        needed = state_bytes * (keep + 1)
        free = shutil.disk_usage(self.path).free
        if free < needed:
            raise FlaxlmError(f"workdir {self.path} has {free / 2**20:.0f} MiB free but {keep} "
                              f"kept checkpoints plus one in flight need ~{needed / 2**20:.0f} "
                              "MiB; free space or lower train.keep_checkpoints")

    def check_same_model(self, requested: dict, fields: tuple[str, ...]) -> None:
        """A workdir's checkpoints fit only the model shapes it was created with."""
        if not self.run:
            return
        model = self.run.get("model", {})
        differing = [k for k in fields if k in model and model[k] != requested.get(k)]
        if differing:
            details = ", ".join(f"model.{k}: saved {model[k]!r} vs requested "
                                f"{requested.get(k)!r}" for k in differing)
            raise FlaxlmError(f"{self.path} holds a run with a different model ({details}); "
                              "use a new --workdir or the saved settings")

    def check_same_tokenizer(self, source: str) -> None:
        """A workdir's checkpoints were trained on its tokenizer's ids: a different tokenizer for
        the same workdir is refused, never copied over it or mixed with its files."""
        ours_dir = self.own_tokenizer_dir
        if not storage.isdir(ours_dir) or same_path(source, ours_dir):
            return
        for name in sorted(storage.listdir(source)):
            theirs, ours = os.path.join(source, name), os.path.join(ours_dir, name)
            if storage.isfile(theirs) and storage.isfile(ours) and not storage.same_bytes(
                    theirs, ours):
                raise FlaxlmError(
                    f"data.tokenizer={source} differs from the tokenizer this workdir was "
                    f"trained with ({ours_dir}: {name} differs); use that tokenizer or a new "
                    "--workdir")


def is_workdir(path: str) -> bool:
    """The one test of "flaxlm workdir or Hugging Face model directory?": a flaxlm workdir's
    config.json is a run config, a JSON object holding a "model" object (an HF config.json
    names a "model_type" instead). A missing or unreadable config.json is a one-line error."""
    config = os.path.join(path, CONFIG_FILE)
    if not storage.isfile(config):
        raise FlaxlmError(f"{path}: no {CONFIG_FILE}; expected a flaxlm workdir or a Hugging "
                          "Face model directory")
    try:
        data = json.loads(storage.read_text(config))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FlaxlmError(f"{config}: not valid JSON ({e})") from None
    return _is_run_config(data)


def _is_run_config(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("model"), dict) and ("model_type"
                                                                               not in data)


def open_or_import(path: str, import_hf: Callable[[str, str], Any], into: str) -> Workdir:
    """`path` as a flaxlm workdir; a Hugging Face model directory is first imported into `into`
    by `import_hf(path, into)` (the caller's importer: conversion is a command, a layer above
    this one)."""
    if is_workdir(path):
        return Workdir.open(path)
    import_hf(path, into)
    return Workdir.open(into)


def write_json_atomic(path: str, data: dict) -> None:
    storage.write_text(path, json.dumps(data, indent=2, sort_keys=True))


def read_run_config(path: str) -> dict | None:
    """A run's `config.json` at `path` (None if there is none); a damaged one is a one-line
    error."""
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


def same_path(a: str, b: str) -> bool:
    if storage.is_remote(a) or storage.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.abspath(a) == os.path.abspath(b)

"""Experiment configs: load a Python config file, apply `--config.a.b=value` overrides, resolve.

A config file is Python code (`get_config() -> ConfigDict`) and is trusted like code. Library code
never sees a ConfigDict: `resolve` turns it into frozen dataclasses, and the resolved form that is
written into a workdir is JSON, never Python.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
from typing import Any, Sequence

import ml_collections
from ml_collections import config_dict

from flaxlm.data import length_buckets
from flaxlm.data.pipeline import DataConfig
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import PRESETS, ModelConfig, preset
from flaxlm.objectives import registry as objective_registry
from flaxlm.objectives import finetune_config
from flaxlm.optim import OptimConfig
from flaxlm.run.steps import StepConfig
from flaxlm.sharding import MeshConfig

_MODEL_FIELDS = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
_PLACEHOLDER_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def base_config() -> ml_collections.ConfigDict:
    """Every key a config may set, with defaults. Config files start from this."""
    c = ml_collections.ConfigDict()
    # objective.name picks the objective; objective.<name>.* are its own settings.
    c.objective = objective_registry.config_section()
    c.seed = 0
    # A flaxlm workdir (e.g. made by `flaxlm import`) whose weights start this run.
    c.init_from = ""

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"
    # Unset fields come from the preset; vocab_size defaults to the tokenizer's.
    for name, type_name in _MODEL_FIELDS.items():
        c.model[name] = config_dict.placeholder(_PLACEHOLDER_TYPES.get(type_name, str))

    c.data = ml_collections.ConfigDict()
    c.data.train_files = ""  # comma-separated: corpus files, globs, TFRecord shards or tfds:NAME
    c.data.text_field = "text"  # the Parquet column / JSON lines field holding a document
    c.data.eval_files = ""
    # Fine-tuning: evaluated once, on the best epoch's weights, when training ends (results.json).
    c.data.test_files = ""
    # A tokenizer directory (see `flaxlm tokenizer`); empty: train one on the text train_files
    # (data.tokenizer_kind, data.tokenizer_vocab_size) into <workdir>/tokenizer, reused on reruns.
    c.data.tokenizer = ""
    c.data.tokenizer_kind = ""  # unigram | wordpiece; empty: unigram for XLM-R, wordpiece for BERT
    c.data.tokenizer_vocab_size = 0  # 0: the model's vocab_size if set, else 8000
    c.data.seq_len = 128
    c.data.shuffle_buffer = 10_000
    # all: every host reads all of train_files; own_units: host p of P reads only the files /
    # Parquet row groups / prepared shards at positions p mod P (flaxlm/data/host_reading.py).
    c.data.host_reading = "all"
    # Share of pre-training rows cut into `[CLS] A [SEP] B [SEP]` with B at token type 1
    # (flaxlm/data/pipeline.py make_masker); -1: ELECTRA's 0.9 for a model with two token types
    # (BERT, ELECTRA), 0 otherwise (XLM-R: one type; DistilBERT: none).
    c.data.two_segment_rate = -1.0
    # Fine-tuning: pad each batch to one of a few lengths (pow2 | none | 32,64,128), so the
    # steps compile once per length (flaxlm/data/length_buckets.py).
    c.data.length_buckets = "pow2"

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 32  # global, across all hosts and accumulation steps
    c.train.grad_accum_steps = 1
    c.train.learning_rate = 5e-4
    c.train.warmup_steps = 0
    # linear: warmup, then linear decay to end_learning_rate; constant: warmup, then no decay.
    c.train.schedule = "linear"
    # > 0: warmup over this fraction of the decay horizon instead (fine-tuning cards: 0.1).
    c.train.warmup_proportion = 0.0
    # Where linear decay reaches end_learning_rate. 0: train.steps of the run that created the
    # workdir, kept when a later run raises train.steps (a continuation, not a re-planned decay).
    c.train.decay_steps = 0
    c.train.end_learning_rate = 0.0
    c.train.restart_steps = ""  # comma-separated steps of warm LR restarts
    c.train.weight_decay = 0.01
    c.train.b1 = 0.9
    c.train.b2 = 0.999
    c.train.eps = 1e-6
    c.train.max_grad_norm = 1.0
    # float32 | bfloat16 | auto (bfloat16 on TPU/GPU, float32 on CPU). bfloat16 keeps fp32 master
    # weights, optimizer state, logits and loss.
    c.train.compute_dtype = "float32"
    c.train.log_every = 10
    c.train.eval_every = 0  # 0: evaluate only at the end
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 3
    # Snapshot the state on the device so a save never blocks the loop (one extra train state of
    # device memory while the host transfer runs); False when the state fills the device.
    c.train.checkpoint_copy_on_device = True
    c.train.nan_policy = "skip"  # or "stop"
    # nan_policy=skip stops the run after this many skipped updates in a row (0: no limit), or
    # at a checkpoint when more than this share of the updates since the last one were skipped
    # (flaxlm/run/skipped_updates.py); neither stretch is ever checkpointed.
    c.train.max_skipped_in_a_row = 20
    c.train.max_skipped_share = 0.1
    c.train.peak_flops_per_device = 0.0  # 0: from the device kind (see flaxlm/flops.py)

    # Epochs, layer-wise LR decay, k-fold and seed repeats (flaxlm/objectives/finetune_config.py).
    c.finetune = finetune_config.section()

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    return c


def load_config_file(path: str) -> ml_collections.ConfigDict:
    if not os.path.isfile(path):
        raise FlaxlmError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"flaxlm_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the config is user code: name the file, keep the message
        raise FlaxlmError(f"{path}: error while loading config: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise FlaxlmError(f"{path}: a config file must define get_config()")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise FlaxlmError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return config


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_all_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


def _parse(raw: str, field_type: type, key: str) -> Any:
    try:
        if field_type is bool:
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return lowered in ("true", "1")
        if field_type is int:
            return int(raw)
        if field_type is float:
            return float(raw)
        return raw
    except ValueError:
        raise FlaxlmError(f"--config.{key}={raw}: expected a value of type "
                          f"{field_type.__name__}") from None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Apply `--config.a.b=value` strings; unknown keys and wrong types are user errors."""
    known = _all_keys(config)
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise FlaxlmError(f"override {item!r} must look like --config.section.key=value")
        key, raw = item[len("--config."):].split("=", 1)
        if key in objective_registry.MOVED_KEYS:
            raise FlaxlmError(f"--config.{key} moved: use --config."
                              f"{objective_registry.MOVED_KEYS[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FlaxlmError(f"unknown config key {key!r}{hint}")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        field_type = node.get_type(leaf)
        node[leaf] = _parse(raw, field_type, key)


def _files(value: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in value.split(",") if f.strip())


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int
    batch_size: int
    log_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    checkpoint_copy_on_device: bool
    nan_policy: str
    peak_flops_per_device: float
    max_skipped_in_a_row: int = 20
    max_skipped_share: float = 0.1


@dataclasses.dataclass(frozen=True)
class RunConfig:
    objective: str
    objective_sections: dict  # config.objective without `name`: {objective name: its settings}
    seed: int
    init_from: str
    model_preset: str
    model_overrides: dict  # the model.* keys set explicitly
    # The preset with those overrides, vocab_size the preset's unless set: the shapes `flaxlm
    # compile` lowers; a training run sizes the vocabulary from its tokenizer (`model`).
    model_config: ModelConfig
    data_tokenizer_kind: str
    data_tokenizer_vocab_size: int
    data: DataConfig
    loop: LoopConfig
    optim: OptimConfig
    warmup_proportion: float  # > 0: overrides optim.warmup_steps once the horizon is known
    # train.decay_steps as set; 0: the horizon of the run that created the workdir (or its steps).
    decay_steps: int
    step: StepConfig
    mesh: MeshConfig
    raw: dict  # the ConfigDict as plain JSON-able data, saved as <workdir>/config.json
    test_on: str = "best"  # finetune.test_on: which epoch's weights score data.test_files
    seeds: int = 1  # finetune.seeds: `flaxlm finetune` trains seeds seed, …, seed + seeds - 1

    def model(self, tokenizer_vocab_size: int, tokenizer_pad_id: int | None = None) -> ModelConfig:
        """The model shapes, with the vocabulary sized from the tokenizer and the padding id taken
        from it, unless set explicitly."""
        sized = {}
        if tokenizer_pad_id is not None and "pad_token_id" not in self.model_overrides:
            sized["pad_token_id"] = tokenizer_pad_id
        vocab = self.model_overrides.get("vocab_size", tokenizer_vocab_size)
        if vocab < tokenizer_vocab_size:
            raise FlaxlmError(f"model.vocab_size={vocab} is smaller than the tokenizer's "
                              f"vocabulary ({tokenizer_vocab_size})")
        config = dataclasses.replace(self.model_config, vocab_size=vocab, **sized)
        config.validate()
        return config


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise FlaxlmError(message)


def resolve(config: ml_collections.ConfigDict) -> RunConfig:
    """Validate ranges and build the frozen dataclasses the library takes."""
    c = config
    t = c.train
    _check(t.steps > 0, f"train.steps must be positive, got {t.steps}")
    _check(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}")
    _check(t.grad_accum_steps > 0, f"train.grad_accum_steps must be positive, got "
           f"{t.grad_accum_steps}")
    _check(
        t.batch_size % t.grad_accum_steps == 0,
        f"train.batch_size={t.batch_size} is not divisible by train.grad_accum_steps="
        f"{t.grad_accum_steps}")
    _check(t.compute_dtype in ("float32", "bfloat16", "auto"),
           f"train.compute_dtype must be float32, bfloat16 or auto, got {t.compute_dtype!r}")
    _check(t.nan_policy in ("skip", "stop"), f"train.nan_policy must be skip or stop, got "
           f"{t.nan_policy!r}")
    _check(
        t.max_skipped_in_a_row >= 0, "train.max_skipped_in_a_row must be >= 0 (0: no limit), "
        f"got {t.max_skipped_in_a_row}")
    _check(0.0 <= t.max_skipped_share <= 1.0, "train.max_skipped_share must be in [0, 1], got "
           f"{t.max_skipped_share}")
    _check(t.log_every > 0, f"train.log_every must be positive, got {t.log_every}")
    _check(t.checkpoint_every > 0, f"train.checkpoint_every must be positive, got "
           f"{t.checkpoint_every}")
    _check(t.keep_checkpoints > 0, f"train.keep_checkpoints must be positive, got "
           f"{t.keep_checkpoints}")
    _check(c.data.seq_len >= 8, f"data.seq_len must be at least 8, got {c.data.seq_len}")
    _check(0.0 <= t.warmup_proportion < 1.0, f"train.warmup_proportion must be in [0, 1), got "
           f"{t.warmup_proportion}")
    _check(t.decay_steps >= 0, f"train.decay_steps must be >= 0, got {t.decay_steps}")
    _check(c.data.tokenizer_kind in ("", "unigram", "wordpiece"), "data.tokenizer_kind must be "
           f"unigram or wordpiece, got {c.data.tokenizer_kind!r}")
    sections = {k: dict(v) for k, v in c.objective.items() if k != "name"}
    finetune_config.validate(c.finetune, _files(c.data.eval_files))
    sections = objective_registry.with_finetune(c.objective.name, sections, dict(c.finetune))
    _check(t.schedule in ("linear", "constant"), f"train.schedule must be linear or constant, "
           f"got {t.schedule!r}")
    _check(
        t.schedule == "linear" or t.end_learning_rate in (0.0, t.learning_rate),
        f"train.end_learning_rate={t.end_learning_rate} is where train.schedule=linear "
        "decays to; train.schedule=constant stays at train.learning_rate")
    objective_registry.make_objective(c.objective.name, sections)  # validates its settings
    _check(
        _files(c.data.train_files) != (), "data.train_files is empty: set "
        "--config.data.train_files=PATH[,PATH...]")
    try:
        restarts = tuple(int(s) for s in _files(t.restart_steps))
    except ValueError:
        raise FlaxlmError(f"train.restart_steps must be comma-separated integers, got "
                          f"{t.restart_steps!r}") from None
    model_overrides = {k: v for k, v in c.model.items() if k != "preset" and v is not None}
    # Fail on shapes before any data is read or anything compiles.
    model_config = preset(c.model.preset, **model_overrides)
    optim = OptimConfig(
        learning_rate=t.learning_rate, warmup_steps=t.warmup_steps, total_steps=t.decay_steps
        or t.steps,
        end_learning_rate=t.learning_rate if t.schedule == "constant" else t.end_learning_rate,
        restart_steps=restarts, weight_decay=t.weight_decay, b1=t.b1, b2=t.b2, eps=t.eps,
        max_grad_norm=t.max_grad_norm)
    optim.validate()
    return RunConfig(
        objective=c.objective.name,
        objective_sections=sections,
        seed=c.seed,
        init_from=c.init_from,
        model_preset=c.model.preset,
        model_overrides=model_overrides,
        model_config=model_config,
        data_tokenizer_kind=c.data.tokenizer_kind
        or ("unigram" if PRESETS[c.model.preset].arch == "xlmr" else "wordpiece"),
        data_tokenizer_vocab_size=c.data.tokenizer_vocab_size,
        data=DataConfig(train_files=_files(c.data.train_files), eval_files=_files(
            c.data.eval_files), test_files=_files(c.data.test_files), folds=c.finetune.folds,
                        fold=c.finetune.fold, tokenizer=c.data.tokenizer, seq_len=c.data.seq_len,
                        text_field=c.data.text_field, shuffle_buffer=c.data.shuffle_buffer,
                        two_segment_rate=c.data.two_segment_rate, host_reading=c.data.host_reading,
                        length_buckets=length_buckets.parse(c.data.length_buckets, c.data.seq_len)),
        loop=LoopConfig(steps=t.steps, batch_size=t.batch_size, log_every=t.log_every,
                        eval_every=t.eval_every, checkpoint_every=t.checkpoint_every,
                        keep_checkpoints=t.keep_checkpoints,
                        checkpoint_copy_on_device=t.checkpoint_copy_on_device,
                        nan_policy=t.nan_policy, peak_flops_per_device=t.peak_flops_per_device,
                        max_skipped_in_a_row=t.max_skipped_in_a_row,
                        max_skipped_share=t.max_skipped_share),
        optim=optim,
        warmup_proportion=t.warmup_proportion,
        decay_steps=t.decay_steps,
        step=StepConfig(grad_accum_steps=t.grad_accum_steps, compute_dtype=t.compute_dtype),
        mesh=MeshConfig(data=c.mesh.data, fsdp=c.mesh.fsdp, tensor=c.mesh.tensor),
        raw=json.loads(c.to_json()),
        test_on=c.finetune.test_on,
        seeds=c.finetune.seeds,
    )


def load(path: str, overrides: Sequence[str] = ()) -> RunConfig:
    config = load_config_file(path)
    base = base_config()
    flat = _flatten(config)
    if isinstance(flat.get("objective"), str):
        raise FlaxlmError(f"{path}: objective is a section now: write "
                          f"c.objective.name = {flat['objective']!r}")
    for old, new in objective_registry.MOVED_KEYS.items():
        if old in flat:
            raise FlaxlmError(f"{path}: {old} moved to {new}")
    # Config files may set any subset of the base keys; anything else is a typo.
    try:
        base.update_from_flattened_dict(flat)
    except (KeyError, TypeError) as e:
        raise FlaxlmError(f"{path}: {e}") from None
    apply_overrides(base, overrides)
    base.lock()
    return resolve(base)


def _flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

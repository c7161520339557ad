"""Applying a table: flaxlm flat params ↔ a transformers state dict, exact both ways."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from flaxlm.convert.mappings.rules import Family
from flaxlm.convert.mappings.tables import Table, expand
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig


def has_pooler(family: Family, tensors: Mapping[str, np.ndarray]) -> bool:
    """Whether a checkpoint (prefixed or a bare base model) stores the pooler."""
    return any(k in tensors for k in (f"{family.prefix}pooler.dense.weight", "pooler.dense.weight"))


def to_hf(table: Table, flat_params: Mapping[str, np.ndarray],
          config: ModelConfig) -> dict[str, np.ndarray]:
    """flaxlm flat params (`/` names) → HF state dict (contiguous numpy arrays)."""
    rows = expand(table, config)
    unmapped = sorted(set(flat_params) - {r.flax for r in rows})
    if unmapped:
        raise FlaxlmError(f"flaxlm parameter {unmapped[0]!r} has no entry in the "
                          f"{table.hf_class} mapping table ({len(unmapped)} unmapped)")
    out = {}
    for rule in rows:
        if rule.flax not in flat_params:
            raise FlaxlmError(f"flaxlm parameter {rule.flax!r} (→ {rule.hf}) is missing")
        out[rule.hf] = np.ascontiguousarray(
            rule.hook.to_hf(np.asarray(flat_params[rule.flax]), config))
    return out


def _with_prefix(table: Table, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Base-model checkpoints (`BertModel`, `XLMRobertaModel`) store the body without prefix."""
    p = table.family.prefix
    body = ("embeddings.", "encoder.", "pooler.")
    if any(k.startswith(p) for k in tensors) or not any(k.startswith(body) for k in tensors):
        return dict(tensors)
    return {(p + k if k.startswith(body) else k): v for k, v in tensors.items()}


def from_hf(table: Table, tensors: Mapping[str, np.ndarray], config: ModelConfig,
            expected: Mapping[str, tuple[int, ...]], *,
            allow_missing_head: bool) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """HF state dict → flaxlm flat params.

    Returns (params, flaxlm names absent from the checkpoint, HF names dropped as `ignored`).

    With `allow_missing_head`, the MLM head may be absent as a whole (an encoder-only checkpoint);
    any other missing, extra, mis-shaped or non-float tensor is a `FlaxlmError` naming it.
    """
    tensors = _with_prefix(table, tensors)
    dropped = sorted(k for k in tensors if k.startswith(table.ignored))
    tensors = {k: v for k, v in tensors.items() if not k.startswith(table.ignored)}
    for alias, target in table.aliases.items():
        if alias in tensors:
            if target in tensors and not np.array_equal(tensors[alias], tensors[target]):
                raise FlaxlmError(f"tensor {alias} differs from {target}; flaxlm ties them, so "
                                  "an untied checkpoint cannot be imported exactly")
            if target not in tensors:
                tensors[target] = tensors[alias]
            del tensors[alias]

    rows = expand(table, config)
    head = [r for r in rows if r.flax.startswith(table.head_prefix)]
    absent = [r.flax for r in head if r.hf not in tensors]
    if absent and (len(absent) != len(head) or not allow_missing_head):
        missing = next(r.hf for r in head if r.hf not in tensors)
        raise FlaxlmError(f"checkpoint is missing tensor {missing} (part of the {table.hf_class} "
                          "head)")

    params: dict[str, np.ndarray] = {}
    for rule in rows:
        if rule.flax in absent:
            continue
        if rule.hf not in tensors:
            raise FlaxlmError(f"checkpoint is missing tensor {rule.hf} (→ flaxlm {rule.flax})")
        value = tensors[rule.hf]
        if value.dtype.kind != "f":
            raise FlaxlmError(f"tensor {rule.hf} has dtype {value.dtype}; expected floats")
        want_hf = rule.hook.to_hf(np.empty(expected[rule.flax], np.float32), config).shape
        if tuple(value.shape) != tuple(want_hf):
            raise FlaxlmError(f"tensor {rule.hf} has shape {tuple(value.shape)}, but config.json "
                              f"implies {tuple(want_hf)} (flaxlm {rule.flax})")
        params[rule.flax] = rule.hook.from_hf(value.astype(np.float32, copy=False), config)
    extra = sorted(set(tensors) - {r.hf for r in rows})
    if extra:
        raise FlaxlmError(f"checkpoint has unexpected tensor {extra[0]} (not in the "
                          f"{table.hf_class} mapping table; {len(extra)} unexpected in all)")
    return params, absent, dropped

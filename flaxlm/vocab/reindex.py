"""Every tensor on the `vocab` logical axis (the word embeddings and the MLM output bias, as the
parameters' own axis metadata says) re-indexed to the kept ids.

Row j of the new tensor is row `sources[j][0]` of the old one: copied bit for bit, so the pruned
model computes exactly what the original did on the kept tokens. Case variants merged into one
uncased token take, with `rows="lowercase"`, the lowercase piece's row when the vocabulary has it,
else (and always with `rows="average"`) the average of the variants' rows weighted by how often
each occurs in the corpus.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.vocab.selection import Plan

ROWS = ("lowercase", "average")


def vocab_axes(model_config, head: str) -> dict[str, int]:
    """{flat parameter name: index of its vocab axis} from the model's logical-axis metadata."""
    from flaxlm.models.heads import model_class

    model = nnx.eval_shape(lambda: model_class(head)(model_config, rngs=nnx.Rngs(0)))
    found = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = variable.get_metadata()["logical_axes"]
        if "vocab" in axes:
            found["/".join(str(p) for p in path)] = axes.index("vocab")
    return found


def mixing_weights(plan: Plan, tokens_V: np.ndarray, rows: str) -> dict[int, np.ndarray]:
    """{new id: weights over its sources} for the new ids that are not a plain copy of one row."""
    if rows not in ROWS:
        raise FlaxlmError(f"--rows {rows!r}: expected one of {', '.join(ROWS)}")
    weights = {}
    for j, (ids, exact) in enumerate(zip(plan.sources, plan.exact)):
        if len(ids) == 1 or (exact and rows == "lowercase"):
            continue
        counts = tokens_V[list(ids)].astype(np.float64)
        weights[j] = (counts / counts.sum() if counts.sum() else np.full(len(ids), 1.0 / len(ids)))
    return weights


def reindex(flat: dict[str, Any], axes: dict[str, int], plan: Plan,
            weights: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """`flat` (flat parameter names → arrays) with every vocab-axis tensor re-indexed."""
    primary = np.array([ids[0] for ids in plan.sources], np.int64)
    out = dict(flat)
    for name, axis in axes.items():
        old = np.asarray(flat[name])
        new = np.take(old, primary, axis=axis)
        moved, new_moved = np.moveaxis(old, axis, 0), np.moveaxis(new, axis, 0)
        for j, w in weights.items():
            rows = moved[list(plan.sources[j])].astype(np.float64)
            new_moved[j] = np.tensordot(w, rows, axes=1).astype(old.dtype)
        out[name] = new
    return out

"""Parameter trees by name: `{"encoder/layers/0/attention/query/kernel": leaf, ...}` and back.

The one flattener of nested parameter dicts (`nnx.to_pure_dict` trees, optimizer state, logical
axes, shardings): checkpoints, init rules, conversion tables and the sharding rules all name a
tensor by its `/`-joined path.
"""

from __future__ import annotations

from typing import Any, Callable

import jax


def _name(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def flat_names(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> dict[str, Any]:
    """`{"/"-joined path: leaf}`; `is_leaf` stops the walk early (e.g. at logical-axis tuples)."""
    return {
        _name(path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    }


def unflatten_like(template: Any, flat: dict[str, Any]) -> Any:
    """The tree of `template`'s structure with each leaf taken from `flat` by its name."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(treedef, [flat[_name(p)] for p, _ in paths])

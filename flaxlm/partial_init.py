"""Partial initialization: sub-trees of a new model loaded from other runs' weights.

An objective's `init_rules` map target sub-trees to sub-trees of named weight sources (the encoder
from a pre-training run, a fresh classifier head; student layer i from teacher layer j; a frozen
teacher from its workdir). Everything no rule covers, or that its source lacks, keeps its fresh
initialization, and the run prints one line saying which is which.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

from flaxlm.errors import FlaxlmError
from flaxlm.objectives.base import InitRule
from flaxlm.steps import flat_names


def _under(name: str, prefix: str) -> bool:
    return not prefix or name == prefix or name.startswith(prefix + "/")


def covers(rule: InitRule, name: str) -> bool:
    return _under(name, rule.target)


def _moved(name: str, rule: InitRule) -> str:
    source_path = rule.target if rule.source_path is None else rule.source_path
    rest = name[len(rule.target):].lstrip("/") if rule.target else name
    return "/".join(p for p in (source_path, rest) if p)


@dataclasses.dataclass
class InitPlan:
    """Which target tensor comes from which (source, tensor); the rest are fresh."""

    loaded: dict[str, tuple[str, str]]  # target name -> (source name, source tensor name)
    fresh: list[str]

    def summary(self, sources: Mapping[str, str]) -> str:
        by_source: dict[str, int] = {}
        for source, _ in self.loaded.values():
            by_source[source] = by_source.get(source, 0) + 1
        loaded = "; ".join(f"{n} tensors from {s} ({sources[s]})" for s, n in by_source.items())
        return (f"weights: {loaded or 'none loaded'}; fresh: "
                f"{_compact(self.fresh) if self.fresh else 'none'}")


def _compact(names: list[str]) -> str:
    """Fresh names grouped by their first two path components, so the line stays one line."""
    groups: dict[str, int] = {}
    for name in names:
        key = "/".join(name.split("/")[:2])
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(f"{k}/* ({n})" if n > 1 or k not in names else k for k, n in groups.items())


def plan(rules: tuple[InitRule, ...], target_shapes: Mapping[str, tuple[int, ...]],
         source_shapes: Mapping[str, Mapping[str, tuple[int, ...]]]) -> InitPlan:
    """Resolve `rules` against the target's and each source's tensor names and shapes.

    A later rule overrides an earlier one for the tensors both cover. A shape that differs
    between target and source is an error naming both.
    """
    loaded: dict[str, tuple[str, str]] = {}
    for rule in rules:
        if rule.source not in source_shapes:
            raise FlaxlmError(f"init rule for {rule.target or 'the whole model'!r} reads weight "
                              f"source {rule.source!r}, which is not set")
        covered = [n for n in target_shapes if _under(n, rule.target)]
        if not covered:
            raise FlaxlmError(f"init rule target {rule.target!r} matches no parameter")
        available = source_shapes[rule.source]
        if not any(_moved(n, rule) in available for n in covered):
            # Loading nothing is never what a rule means: the source is a run of another model
            # (e.g. a head whose encoder lives under other names), and training from scratch
            # while the user believes it fine-tunes would waste the run.
            raise FlaxlmError(
                f"init rule for {rule.target or 'the whole model'!r}: weight source "
                f"{rule.source!r} holds none of its {len(covered)} tensors (looked for "
                f"{_moved(covered[0], rule)!r}; the source has e.g. "
                f"{', '.join(sorted(available)[:3]) or 'nothing'})")
        for name in covered:
            source_name = _moved(name, rule)
            if source_name not in available:
                continue
            if tuple(available[source_name]) != tuple(target_shapes[name]):
                raise FlaxlmError(
                    f"{rule.source} tensor {source_name} has shape "
                    f"{tuple(available[source_name])}, but {name} needs "
                    f"{tuple(target_shapes[name])}")
            loaded[name] = (rule.source, source_name)
    return InitPlan(loaded, [n for n in target_shapes if n not in loaded])


def apply(plan_: InitPlan, fresh: Any, sources: Mapping[str, Mapping[str, Any]],
          shardings: Any) -> Any:
    """The nested dict `fresh` with the planned tensors replaced, each placed with its sharding
    from the matching tree `shardings`."""
    flat, placement = flat_names(fresh), flat_names(shardings)
    for name, (source, source_name) in plan_.loaded.items():
        if name in flat:
            value = np.asarray(jax.device_get(sources[source][source_name]))
            flat[name] = jax.device_put(value.astype(flat[name].dtype), placement[name])
    leaves = [flat[n] for n in flat_names(fresh)]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(fresh), leaves)

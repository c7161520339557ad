"""A run's starting weights: sub-trees of a new model loaded from other runs' weights.

An objective's `init_rules` map target sub-trees to sub-trees of named weight sources (the encoder
from a pre-training run, a fresh classifier head; student layer i from teacher layer j; a frozen
teacher from its workdir). Everything no rule covers, or that its source lacks, keeps its fresh
initialization, and the run prints one line saying which is which. `load` applies the rules to a
fresh state and to the frozen variables (a teacher) and returns both; ELECTRA pre-training runs are
read with the discriminator seen as an encoder, as ELECTRA is fine-tuned.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

from flaxlm.errors import FlaxlmError
from flaxlm.models import electra
from flaxlm.models.param_tree import flat_names
from flaxlm.run.checkpoint import read_params
from flaxlm.run.protocol import InitRule, Objective
from flaxlm.run.steps import State, TrainProgram


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
                raise FlaxlmError(f"{rule.source} tensor {source_name} has shape "
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


def load(program: TrainProgram, objective: Objective, init_from: str, state: State | None,
         frozen: Any) -> tuple[State | None, Any, str | None]:
    """Apply the objective's init rules to the fresh `state` and the fresh `frozen` variables, or
    (when resuming, `state` is None) to the frozen variables alone, which checkpoints do not hold.
    Returns (state or None, frozen variables placed with their shardings, one line saying what
    was loaded and what is fresh, or None if no rule applies)."""
    sources = {"init_from": init_from} if init_from else {}
    sources.update(objective.weight_sources())
    rules = objective.init_rules(bool(init_from))
    targets = {"frozen": frozen} if state is None else {"params": state["params"], "frozen": frozen}
    target_shapes = {n: v.shape for t in targets.values() for n, v in flat_names(t).items()}
    rules = tuple(r for r in rules if any(covers(r, n) for n in target_shapes))
    if not rules:
        return state, frozen, None
    source_params, steps = {}, {}
    for name in {r.source for r in rules}:
        if name not in sources:
            raise FlaxlmError(f"objective {objective.name} loads weights from {name!r}, "
                              "which is not set")
        params, _, steps[name] = read_params(sources[name])
        source_params[name] = electra.discriminator_as_encoder(flat_names(params))
    plan_ = plan(rules, target_shapes, {
        s: {
            k: np.shape(v)
            for k, v in p.items()
        }
        for s, p in source_params.items()
    })
    # A frozen tensor never trains: left fresh, it would stay random for the whole run (a teacher
    # with a random layer gives wrong targets and no error).
    unloaded = [n for n in flat_names(frozen) if n not in plan_.loaded]
    if unloaded:
        rule = next((r for r in rules if covers(r, unloaded[0])), None)
        where = (f"weight source {rule.source!r} ({sources.get(rule.source, 'unset')})"
                 if rule else "no init rule")
        raise FlaxlmError(f"frozen tensor {unloaded[0]} is not in {where} ({len(unloaded)} frozen "
                          "tensors missing): a frozen tensor never trains, so it cannot start "
                          "fresh")
    frozen = apply(plan_, frozen, source_params, program.frozen_shardings)
    if state is not None:
        params = apply(plan_, state["params"], source_params, program.state_shardings["params"])
        state = jax.jit(program.state_from_params,
                        out_shardings=program.state_shardings)(params, state["rng"])
    summary = plan_.summary({s: f"{sources[s]}, step {steps[s]}" for s in source_params})
    if state is not None:  # read from the sources, as `apply` does: host values on every host
        norms = {
            n: source_params[source][name]
            for n, (source, name) in plan_.loaded.items() if "/output_norm/" in n
        }
        summary += small_features_note(plan_, norms, objective)
    return state, frozen, summary


# A fresh head's logits move with the scale of the features it reads; below this output RMS (a
# fresh post-LayerNorm encoder's is ~1) the start of fine-tuning is visibly slow (docs/flare.md).
SMALL_FEATURES_RMS = 0.5


def small_features_note(plan_: InitPlan, params: Mapping[str, Any], objective: Objective) -> str:
    """'' or a clause for the weights line: the loaded encoder's output is small for the fresh
    head that reads it (no pooler in between), with the `finetune.head_lr_scale` that
    compensates (≈ 1 / RMS). `params`: loaded values by target name (the LayerNorms suffice).

    A post-LayerNorm encoder's last LayerNorm sets its output scale: per token the normalized
    values have unit mean square, so the output's RMS is about sqrt(mean(scale² + bias²)), read
    from the loaded weights without running the model (multilingual-e5-small: 0.25 from its
    weights, 0.26 measured on text)."""
    head_lr_scale = getattr(getattr(objective, "config", None), "head_lr_scale", None)
    if head_lr_scale != 1.0 or not any(not n.startswith("encoder/") for n in plan_.fresh):
        return ""
    if any(n.startswith("encoder/pooler/") for n in [*plan_.loaded, *plan_.fresh]):
        return ""  # the head reads the pooler's tanh output, whose scale is the pooler's own
    norms = [
        n for n in plan_.loaded
        if n.startswith("encoder/layers/") and n.endswith("/output_norm/scale")
    ]
    if not norms:
        return ""
    last = max(norms, key=lambda n: int(n.split("/")[2]))
    scale = np.asarray(jax.device_get(params[last]), np.float64)
    bias_name = last[:-len("scale")] + "bias"
    bias = np.asarray(jax.device_get(params[bias_name]), np.float64) if bias_name in params else 0
    rms = float(np.sqrt(np.mean(scale ** 2 + bias ** 2)))
    if rms >= SMALL_FEATURES_RMS:
        return ""
    return (f"; note: the encoder's output RMS is about {rms:.2f} (its last LayerNorm; a fresh "
            f"encoder's is 1), so the fresh head learns about {1 / rms:.0f}× more slowly: "
            f"--config.finetune.head_lr_scale={1 / rms:.0f} compensates (docs/finetuning.md)")

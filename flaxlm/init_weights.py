"""Where a run's model shapes and starting weights come from, before the train loop starts.

`resolve_model`: the model config of a fresh run, or `init_from`'s (whose shapes are fixed; only
dropout rates may be set). `load_weights`: the objective's init rules applied to a fresh state and
to the frozen variables (a teacher), reading each named weight source; ELECTRA pre-training runs
are read with the discriminator seen as an encoder, as ELECTRA is fine-tuned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from flaxlm import partial_init
from flaxlm.run.checkpoint import read_params
from flaxlm.errors import FlaxlmError
from flaxlm.models import electra
from flaxlm.models.config import ModelConfig
from flaxlm.objectives.base import Objective
from flaxlm.run_config import RunConfig
from flaxlm.steps import TrainProgram, flat_names


def resolve_model(config: RunConfig, tokenizer) -> ModelConfig:
    if not config.init_from:
        return config.model(tokenizer.vocab_size, tokenizer.pad_id)
    from flaxlm.run.workdir import ELECTRA_PAIR, Workdir
    source = Workdir.open(config.init_from)
    saved = source.model  # validated like export validates it
    if config.objective == "electra" and source.kind != ELECTRA_PAIR:
        raise FlaxlmError(
            f"init_from={config.init_from} holds no ELECTRA generator (head {source.head!r}); "
            "ELECTRA pre-training continues a generator + discriminator pair: import both with "
            "`flaxlm import --hf DISCRIMINATOR --generator GENERATOR --out DIR` (pass --generator)")
    # The source's shapes win; only dropout may be set from this config.
    fixed = {k: v for k, v in config.model_overrides.items()
             if not k.endswith("dropout") and getattr(saved, k, v) != v}
    if fixed:
        details = ", ".join(f"model.{k}={v!r} (init_from has {getattr(saved, k)!r})"
                            for k, v in sorted(fixed.items()))
        raise FlaxlmError(f"{details}: cannot apply with init_from={config.init_from}, whose "
                          "shapes are fixed; drop the override (only dropout rates may change)")
    dropout = {k: v for k, v in config.model_overrides.items() if k.endswith("dropout")}
    return dataclasses.replace(saved, **dropout)


def load_weights(program: TrainProgram, objective: Objective, config: RunConfig,
                 state: Any | None) -> tuple[Any, str]:
    """Apply the objective's init rules: to the fresh `state` and the frozen variables, or (when
    resuming, `state` is None) to the frozen variables alone, which checkpoints do not hold.
    Returns (state or None, one line saying what was loaded and what is fresh; None if no rule
    applies)."""
    sources = {"init_from": config.init_from} if config.init_from else {}
    sources.update(objective.weight_sources())
    rules = objective.init_rules(bool(config.init_from))
    targets = {"frozen": program.frozen} if state is None else {
        "params": state["params"], "frozen": program.frozen}
    target_shapes = {n: v.shape for t in targets.values() for n, v in flat_names(t).items()}
    rules = tuple(r for r in rules if any(partial_init.covers(r, n) for n in target_shapes))
    if not rules:
        return state, None
    source_params, steps = {}, {}
    for name in {r.source for r in rules}:
        if name not in sources:
            raise FlaxlmError(f"objective {objective.name} loads weights from {name!r}, "
                              "which is not set")
        params, _, steps[name] = read_params(sources[name])
        source_params[name] = electra.discriminator_as_encoder(flat_names(params))
    plan = partial_init.plan(rules, target_shapes, {
        s: {k: np.shape(v) for k, v in p.items()} for s, p in source_params.items()})
    # A frozen tensor never trains: left fresh, it would stay random for the whole run (a teacher
    # with a random layer gives wrong targets and no error).
    unloaded = [n for n in flat_names(program.frozen) if n not in plan.loaded]
    if unloaded:
        rule = next((r for r in rules if partial_init.covers(r, unloaded[0])), None)
        where = (f"weight source {rule.source!r} ({sources.get(rule.source, 'unset')})"
                 if rule else "no init rule")
        raise FlaxlmError(f"frozen tensor {unloaded[0]} is not in {where} ({len(unloaded)} frozen "
                          "tensors missing): a frozen tensor never trains, so it cannot start "
                          "fresh")
    program.set_frozen(partial_init.apply(plan, program.frozen, source_params,
                                          program.frozen_shardings))
    if state is not None:
        params = partial_init.apply(plan, state["params"], source_params,
                                    program.state_shardings["params"])
        state = jax.jit(program.state_from_params, out_shardings=program.state_shardings)(
            params, state["rng"])
    return state, plan.summary({s: f"{sources[s]}, step {steps[s]}" for s in source_params})

"""A run built once: mesh × batch × accumulation checked, tokenizer and model config resolved,
the objective made and its data planned, the program compiled-to-be and its sharded state shapes.

`train` (flaxlm/train.py), `flaxlm compile` (flaxlm/aot.py) and the benchmarks
(benchmarks/runners/flaxlm_step.py) all build through here, so a run means the same thing to each:
`check_batch` and `build_program` are the shared parts; `build` adds what a training run reads
from its data and its workdir.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
from jax.sharding import Mesh

from flaxlm.data.run_tokenizer import check_tokenizer_fits, tokenizer_for_run
from flaxlm.data.tokenizers import Tokenizer, load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import config_for_head
from flaxlm.objectives.registry import make_objective
from flaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer
from flaxlm.run.protocol import DataContext, DataPlan, Objective
from flaxlm.run.results import test_context
from flaxlm.run.steps import StepConfig, TrainProgram
from flaxlm.run.workdir import ELECTRA_PAIR, Workdir
from flaxlm.run_config import LoopConfig, RunConfig
from flaxlm.sharding import data_parallel_size, make_mesh

# Model fields whose change makes a checkpoint unusable; dropout rates may change on resume.
_SHAPE_FIELDS = ("arch", "vocab_size", "hidden_size", "num_layers", "num_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size", "pad_token_id",
                 "head_dim")


def check_batch(mesh: Mesh, batch_size: int, grad_accum_steps: int, processes: int = 1) -> None:
    """The global batch splits evenly over data-parallel devices × accumulation and processes."""
    dp = data_parallel_size(mesh)
    if batch_size % (dp * grad_accum_steps):
        raise FlaxlmError(
            f"train.batch_size={batch_size} must be divisible by data-parallel size {dp} "
            f"(mesh data×fsdp) × train.grad_accum_steps={grad_accum_steps}")
    if batch_size % processes:
        raise FlaxlmError(f"train.batch_size={batch_size} must be divisible by the "
                          f"{processes} processes")


def build_program(objective: Objective, model_config: ModelConfig, optim: OptimConfig, mesh: Mesh,
                  step: StepConfig) -> TrainProgram:
    """The jitted steps for one (objective, model, optimizer, mesh); the schedule is built once,
    for the optimizer and for the learning rate the step logs."""
    schedule = learning_rate_schedule(optim)
    return TrainProgram(objective, model_config, make_optimizer(optim, schedule), schedule, mesh,
                        step)


def sharded_abstract(program: TrainProgram) -> tuple[Any, Any]:
    """(train state, frozen variables) as ShapeDtypeStructs carrying their shardings: what a
    restore reads into and what an ahead-of-time compile lowers with."""
    def with_shardings(abstract, shardings):
        return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, shardings)

    return (with_shardings(program.abstract_state, program.state_shardings),
            with_shardings(program.abstract_frozen, program.frozen_shardings))


def resolve_model(config: RunConfig, tokenizer: Tokenizer) -> ModelConfig:
    """The model of a fresh run, sized by its tokenizer; or `init_from`'s, whose shapes are fixed
    (only dropout rates may be set)."""
    if not config.init_from:
        return config.model(tokenizer.vocab_size, tokenizer.pad_id)
    source = Workdir.open(config.init_from)
    saved = source.model  # validated like export validates it
    if config.objective == "electra" and source.kind != ELECTRA_PAIR:
        raise FlaxlmError(
            f"init_from={config.init_from} holds no ELECTRA generator (head {source.head!r}); "
            "ELECTRA pre-training continues a generator + discriminator pair: import both with "
            "`flaxlm import --hf DISCRIMINATOR --generator GENERATOR --out DIR` (pass --generator)")
    fixed = {
        k: v
        for k, v in config.model_overrides.items()
        if not k.endswith("dropout") and getattr(saved, k, v) != v
    }
    if fixed:
        details = ", ".join(f"model.{k}={v!r} (init_from has {getattr(saved, k)!r})"
                            for k, v in sorted(fixed.items()))
        raise FlaxlmError(f"{details}: cannot apply with init_from={config.init_from}, whose "
                          "shapes are fixed; drop the override (only dropout rates may change)")
    dropout = {k: v for k, v in config.model_overrides.items() if k.endswith("dropout")}
    return dataclasses.replace(saved, **dropout)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One training run, built: everything the loop needs before its first step."""

    config: RunConfig
    loop: LoopConfig  # with epochs applied: steps and eval_every may differ from config.loop
    optim: OptimConfig  # with the decay horizon and warmup fixed
    mesh: Mesh
    tokenizer_dir: str
    model_config: ModelConfig
    objective: Objective
    ctx: DataContext  # this process's share of the data, for the objective's batches
    plan: DataPlan
    program: TrainProgram
    abstract_state: Any  # ShapeDtypeStructs with the state's shardings (what a restore reads)
    test_batches: list  # data.test_files, read and checked before anything compiles
    notes: tuple[str, ...]  # printed once at start


def build(config: RunConfig, workdir: Workdir, *, is_main: bool = True) -> Experiment:
    """Validate and build the run `config` trains into `workdir` (checked against the run its
    config.json records, if any): every refusal comes here, before anything compiles."""
    loop, procs = config.loop, jax.process_count()
    mesh = make_mesh(config.mesh)
    check_batch(mesh, loop.batch_size, config.step.grad_accum_steps, procs)

    # With init_from, the tokenizer defaults to the imported one. Without any, one is trained on
    # the text train_files into <workdir>/tokenizer (and reused).
    tokenizer_dir = config.data.tokenizer
    if not tokenizer_dir and config.init_from:
        tokenizer_dir = Workdir(config.init_from).tokenizer_dir
    tokenizer_dir = tokenizer_for_run(tokenizer_dir, config.data.train_files,
                                      workdir.own_tokenizer_dir, kind=config.data_tokenizer_kind,
                                      vocab_size=config.data_tokenizer_vocab_size,
                                      model_vocab_size=config.model_config.vocab_size,
                                      is_main=is_main, text_field=config.data.text_field)
    workdir.check_same_tokenizer(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    model_config = resolve_model(config, tokenizer)

    # The objective reads what it needs of its data first: a label set fixes the classifier's
    # width, an epoch size fixes the number of steps.
    objective = make_objective(config.objective, config.objective_sections)
    ctx = DataContext(dataclasses.replace(config.data, tokenizer=tokenizer_dir), tokenizer,
                      config.seed, loop.batch_size // procs, jax.process_index(), procs,
                      token_types=model_config.type_vocab_size > 0,
                      type_vocab_size=model_config.type_vocab_size)
    plan = objective.plan_data(ctx)
    ctx = dataclasses.replace(ctx, plan=plan)  # handed back to the objective with its batches
    test_batches = (objective.eval_batches(test_context(ctx)) if ctx.data.test_files else [])
    if plan.model_overrides:
        model_config = dataclasses.replace(model_config, **plan.model_overrides)
        model_config.validate()
    model_config = config_for_head(objective.head, model_config)
    _check_same_record(workdir, plan.run_record)
    # Out-of-range ids would become NaN rows and a mismatched pad id would mask real tokens.
    check_tokenizer_fits(
        tokenizer, model_config,
        model_source=(f"init_from={config.init_from}/config.json"
                      if config.init_from else f"preset {config.model_preset!r} + model overrides"))
    if ctx.data.seq_len > model_config.max_seq_len:
        raise FlaxlmError(f"data.seq_len={ctx.data.seq_len} exceeds the model's "
                          f"{model_config.max_seq_len} positions")
    workdir.check_same_model(dataclasses.asdict(model_config), _SHAPE_FIELDS)

    loop, optim, notes = _schedule(config, plan, (workdir.run or {}).get("decay_steps"))
    program = build_program(objective, model_config, optim, mesh, config.step)
    return Experiment(config, loop, optim, mesh, tokenizer_dir, model_config, objective, ctx, plan,
                      program,
                      sharded_abstract(program)[0], test_batches,
                      tuple(plan.notes) + notes)


def _check_same_record(workdir: Workdir, record) -> None:
    """What the data fixed when the workdir was created (a label set) must not change on resume."""
    for key, value in record.items():
        saved = (workdir.run or {}).get(key)
        if saved is not None and saved != json.loads(json.dumps(value)):
            raise FlaxlmError(
                f"{workdir.config_file}: {key} = {saved} but the data now "
                f"gives {list(value) if isinstance(value, tuple) else value}; its checkpoints fit "
                "the former: use the original data or a new --workdir")


def _schedule(config: RunConfig, plan: DataPlan,
              saved_horizon: int | None) -> tuple[LoopConfig, OptimConfig, tuple[str, ...]]:
    """Steps, decay horizon and warmup. The horizon is the workdir's (a continuation keeps it)
    unless train.decay_steps sets one. With `epochs`: steps = epochs × steps per epoch, an
    evaluation after every epoch, and the decay over those steps. Then `train.warmup_proportion`
    of the horizon as warmup."""
    loop, optim, notes = config.loop, config.optim, []
    if saved_horizon and not config.decay_steps:
        optim = dataclasses.replace(optim, total_steps=saved_horizon)
    if plan.epochs:
        per_epoch = -(-plan.examples_per_epoch // loop.batch_size)
        steps = plan.epochs * per_epoch
        loop = dataclasses.replace(loop, steps=steps, eval_every=per_epoch)
        if not config.decay_steps:
            optim = dataclasses.replace(optim, total_steps=steps)
    if config.warmup_proportion:
        optim = dataclasses.replace(
            optim, warmup_steps=round(config.warmup_proportion * optim.total_steps))
    if plan.epochs:
        notes.append(
            f"{plan.epochs} epochs × {loop.eval_every} steps ({plan.examples_per_epoch} examples, "
            f"batch {loop.batch_size}) = {loop.steps} steps (train.steps is not used); evaluating "
            f"every {loop.eval_every} steps; warmup {optim.warmup_steps} steps, decay over "
            f"{optim.total_steps}")
    if loop.steps > optim.total_steps:
        notes.append(f"steps past {optim.total_steps} (the decay horizon) run at "
                     f"end_learning_rate={optim.end_learning_rate}; set "
                     "--config.train.decay_steps to re-plan the decay")
    return loop, optim, tuple(notes)

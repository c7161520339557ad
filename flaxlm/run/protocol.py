"""What a training objective provides to the one trainer (`flaxlm.run.steps.TrainProgram`).

The contract lives here, in the run layer beneath the objectives that implement it
(flaxlm/objectives/), so the trainer's parts never import an objective.

An objective is everything that differs between recipes — MLM, ELECTRA, distillation,
fine-tuning — and nothing else: the model it builds (and which parts of it stay frozen), where its
weights come from, the batches it reads, its loss, its metrics and its FLOPs. The trainer,
sharding, checkpoints, logging and the loop are shared. docs/architecture.md walks through MLM as
the worked example.

Exact losses with several terms. A loss may add terms over different counts (ELECTRA: generator
cross-entropy over masked positions + 50 × discriminator loss over tokens). The step first asks
`normalizers(batch)` for every count over the *whole global batch*, then calls `loss` on each
micro-batch with those counts, so each micro-batch's loss is already divided by the global count of
its term and the micro-batch losses (and gradients) simply add up: gradient accumulation equals one
big batch for any number of terms. `loss` also returns additive `sums` (statistics summed over the
micro-batch) from which `metrics` computes what is logged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Protocol

import jax
import numpy as np
from flax import nnx

from flaxlm.models.config import ModelConfig

Batch = Mapping[str, jax.Array]
Sums = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class DataContext:
    """What an objective needs to build this process's batches."""

    data: Any  # flaxlm.data.pipeline.DataConfig
    tokenizer: Any  # flaxlm.data.tokenizers.Tokenizer
    seed: int
    host_batch_size: int
    process_index: int = 0
    process_count: int = 1
    token_types: bool = True  # the model reads token_type_ids (model.type_vocab_size > 0)
    # model.type_vocab_size (0: none, or not known): what data.two_segment_rate AUTO resolves by
    type_vocab_size: int = 0
    # What the objective's `plan_data` returned, handed back to it (None before planning): an
    # objective keeps nothing it learns from its data on itself.
    plan: DataPlan | None = None


@dataclasses.dataclass(frozen=True)
class InitRule:
    """Load the parameters under `target` from `source_path` of the weights named `source`.

    Paths are `/`-joined parameter-name prefixes ("" is the whole tree). `source` names an entry
    of the run's weight sources: "init_from" (the config key) or a source the objective adds
    (e.g. "teacher"). Parameters that no rule covers, or whose source lacks them, start fresh.
    """

    target: str
    source: str = "init_from"
    source_path: str | None = None  # None: the same path as `target`


@dataclasses.dataclass(frozen=True)
class DataPlan:
    """What an objective learns from its data before the model is built (`Objective.plan_data`).

    Fine-tuning reads its label set and its number of examples here; pre-training needs none of it.
    """

    # Model fields the data fixes (e.g. {"num_labels": 17}), applied over the resolved model.
    model_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Top-level entries of the workdir's config.json (e.g. {"labels": [...]}, which export turns
    # into id2label). A resumed run whose data gives different values is refused.
    run_record: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # epochs > 0: train.steps = epochs × ceil(examples_per_epoch / train.batch_size), and the run
    # evaluates (and, with a `selection`, checkpoints) after every epoch.
    epochs: int = 0
    examples_per_epoch: int = 0
    notes: tuple[str, ...] = ()  # printed once at start ("3 sentences split into windows", ...)
    # The objective's own reading of its data (a label set, encoded rows, gold labels), returned
    # to it through `DataContext.plan` and `eval_metrics`; the trainer never looks inside.
    state: Any = None


@dataclasses.dataclass(frozen=True)
class EvalSelection:
    """The held-out metric that selects the best checkpoint (e.g. entity F1, maximized)."""

    metric: str  # a key of `Objective.eval_metrics` (without the "eval_" prefix)
    mode: str = "max"  # or "min"


class Objective(Protocol):
    """What every objective defines (12 members). `ObjectiveDefaults` adds the optional groups
    below — data planning, initialization, evaluation — with defaults that fit pre-training."""

    name: str  # its key in the registry and in `config.objective`
    # The head its checkpoints carry (a key of `flaxlm.models.heads.MODELS`): written to the
    # workdir's config.json, it picks the conversion table export uses and lets a later run
    # `init_from` this workdir.
    head: str
    # Its settings: a frozen dataclass whose fields, with their defaults, are the
    # `objective.<name>.*` config keys; the objective is constructed as `cls(cls.Config(...))`.
    Config: type

    # -- model ---------------------------------------------------------------------------------
    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
        ...

    # -- data ----------------------------------------------------------------------------------
    def train_batches(self, ctx: DataContext,
                      start_example: int) -> Iterator[dict[str, np.ndarray]]:
        """Endless host-local training batches, the first starting at global example `start_example`."""
        ...

    def eval_batches(self, ctx: DataContext) -> list[dict[str, np.ndarray]]:
        ...

    def batch_spec(self, global_batch: int, data: Any) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes and dtypes of one global batch (what `flaxlm compile` lowers with)."""
        ...

    def real_counts(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Host-side counts of real work in a batch: at least `tokens` (non-padding input tokens).

        Throughput and MFU are computed from these, never from padded slots.
        """
        ...

    # -- loss ----------------------------------------------------------------------------------
    def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
        """Every count a loss term is divided by, over the whole (global) batch."""
        ...

    def loss(self, model: nnx.Module, batch: Batch, normalizers: Mapping[str, jax.Array], *, dtype,
             dropout_key: jax.Array | None) -> tuple[jax.Array, Sums]:
        """(this batch's loss, already divided by `normalizers`; additive statistics)."""
        ...

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        """Per-step metrics (at least `loss`) from the summed statistics of a whole batch."""
        ...

    # -- cost ----------------------------------------------------------------------------------
    def train_flops(self, config: ModelConfig, seq_len: int, counts: Mapping[str, float]) -> float:
        """Training FLOPs of the work in `counts` (real tokens, real predictions, ...)."""
        ...

    # -- optional: data planning (default: nothing to plan) ----------------------------------
    def plan_data(self, ctx: DataContext) -> DataPlan:
        """Called once, before the model is built: label set, epoch size, notes."""
        ...

    # -- optional: initialization (default: everything from init_from, nothing frozen) -------
    # nnx filter for variables that are loaded but never trained (a teacher, frozen embeddings):
    # no gradients, no optimizer state, not donated, not checkpointed (re-read from their source).
    frozen: Any

    def init_rules(self, has_init_from: bool) -> tuple[InitRule, ...]:
        """Which sub-trees load from which weight source; the rest is freshly initialized."""
        ...

    def weight_sources(self) -> dict[str, str]:
        """Weight sources besides `init_from` (e.g. {"teacher": WORKDIR}), by the name rules use."""
        ...

    def lr_scales(self, config: ModelConfig, param_paths: list[str]) -> dict[str, float] | None:
        """Per-parameter learning-rate multipliers (layer-wise decay); None: all 1."""
        ...

    # -- optional: evaluation (default: the training metrics over the eval set, no selection) --
    selection: EvalSelection | None  # the metric that picks the best checkpoint
    summary_keys: tuple[str, ...]  # shown in the progress bar and the end-of-run summary

    def eval_outputs(self, model: nnx.Module, batch: Batch, *, dtype) -> Mapping[str, jax.Array]:
        """What one eval batch yields on the device: additive sums and/or per-example outputs."""
        ...

    def eval_metrics(self, outputs: list[Mapping[str, np.ndarray]],
                     batches: list[Mapping[str, np.ndarray]], plan: DataPlan) -> dict[str, float]:
        """Host-side reduction of every eval batch's outputs (entity F1 needs all predictions).

        `batches` are the global batches, row for row with `outputs` (with several processes,
        every process's rows, not only this host's); `plan` is what `plan_data` returned."""
        ...


class ObjectiveDefaults:
    """The optional groups of `Objective` with their defaults; subclass it and override what
    differs."""

    # -- data planning -------------------------------------------------------------------------
    def plan_data(self, ctx: DataContext) -> DataPlan:
        return DataPlan()

    # -- initialization ------------------------------------------------------------------------
    frozen: Any = nnx.Nothing()  # no frozen variables

    def init_rules(self, has_init_from: bool) -> tuple[InitRule, ...]:
        # With init_from, everything it holds; parameters it lacks start fresh.
        return (InitRule(""), ) if has_init_from else ()

    def weight_sources(self) -> dict[str, str]:
        return {}

    def lr_scales(self, config: ModelConfig, param_paths: list[str]) -> dict[str, float] | None:
        return None

    # -- evaluation ----------------------------------------------------------------------------
    selection: EvalSelection | None = None
    summary_keys: tuple[str, ...] = ("loss", )

    def eval_outputs(self, model: nnx.Module, batch: Batch, *, dtype) -> Mapping[str, jax.Array]:
        _, sums = self.loss(model, batch, self.normalizers(batch), dtype=dtype, dropout_key=None)
        return sums

    def eval_metrics(self, outputs: list[Mapping[str, np.ndarray]],
                     batches: list[Mapping[str, np.ndarray]],
                     plan: DataPlan | None = None) -> dict[str, float]:
        """Additive outputs: sum over batches, then the same metrics as training."""
        totals = jax.tree.map(lambda *xs: np.sum(xs, axis=0), *outputs)
        return {k: float(v) for k, v in self.metrics(totals).items()}

"""Sequence and sequence-pair classification (XNLI, PAWS-X, any labelled TSV/JSONL): a fresh
`*ForSequenceClassification` head on a loaded encoder, cross-entropy over examples.

Labels: the label names of the training files, sorted, unless `objective.sequence_classification.
labels` fixes them (and their id order); written to config.json as "labels", which export turns
into id2label/label2id. A label that only the evaluation files have is reported and scored as an
error. Layer-wise learning-rate decay (`finetune.layer_decay` = d; 1.0 is off): the classifier head
and the pooler train at the base rate, the top encoder layer at d, each layer below one more factor
(layer i of L at d^(L-i)) and the embeddings last at d^(L+1). ELECTRA's fine-tuning code counts
the head as a depth of its own, so its top layer gets d² and its embeddings d^(L+2):
`finetune.layer_decay_style=electra` (flaxlm/optim.py `layer_decay_scales`). `finetune.head_lr_scale`
multiplies the classifier's rate (not the pooler's) on top: flaxlm/optim.py `finetune_lr_scales`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxlm.data import pair_batches, pairs
from flaxlm.errors import FlaxlmError, check_choice
from flaxlm.flops import encoder_train_flops_cut
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import SequenceClassifierModel
from flaxlm.models.layers import FRESH_INITS, redraw_fresh
from flaxlm.objectives import finetune_config
from flaxlm.optim import LAYER_DECAY_STYLES, check_head_lr_scale, finetune_lr_scales
from flaxlm.run.protocol import (Batch, DataContext, DataPlan, EvalSelection, InitRule,
                                 ObjectiveDefaults, Sums)

SECTION = "objective.sequence_classification"


@dataclasses.dataclass(frozen=True)
class SequenceClassificationConfig:
    """`objective.sequence_classification.*` keys; `epochs` and `layer_decay` are set from
    `finetune.*` (flaxlm/objectives/finetune_config.py)."""

    labels: str = ""  # comma-separated label names in id order; empty: the train labels, sorted
    epochs: int = 0  # > 0: train.steps = epochs × steps per epoch, evaluated after each epoch
    language: str = "es"  # the language read from multilingual TFDS sets (xnli)
    layer_decay: float = 1.0  # layer-wise learning-rate decay; 1.0: off
    layer_decay_style: str = "flaxlm"  # or "electra" (flaxlm/optim.py layer_decay_scales)
    head_lr_scale: float = 1.0  # the fresh classifier's rate factor (flaxlm/optim.py)
    fresh_init: str = "truncated_normal"  # | normal | glorot_uniform (layers.py FRESH_INITS)

    def validate(self) -> None:
        if self.epochs < 0:
            raise FlaxlmError(f"finetune.epochs must be >= 0, got {self.epochs}")
        if not 0 < self.layer_decay <= 1:
            raise FlaxlmError(f"finetune.layer_decay must be in (0, 1], got {self.layer_decay}")
        check_head_lr_scale(self.head_lr_scale)
        check_choice("finetune.fresh_init", self.fresh_init, FRESH_INITS)
        if self.layer_decay_style not in LAYER_DECAY_STYLES:
            raise FlaxlmError(f"finetune.layer_decay_style={self.layer_decay_style!r}: one of "
                              f"{', '.join(LAYER_DECAY_STYLES)}")
        names = self.label_names()
        if self.labels and (len(names) < 2 or len(set(names)) != len(names)):
            raise FlaxlmError(f"{SECTION}.labels={self.labels!r}: needs two or more distinct, "
                              "comma-separated names")

    def label_names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.labels.split(",") if n.strip())


def macro_scores(gold_N: np.ndarray, pred_N: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 per class over the classes in gold or predictions, averaged
    (sklearn's `average="macro"`); a gold label never predicted scores 0."""
    scores = []
    for c in np.union1d(gold_N, pred_N):
        tp = np.sum((pred_N == c) & (gold_N == c))
        precision = tp / max(np.sum(pred_N == c), 1)
        recall = tp / max(np.sum(gold_N == c), 1)
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        scores.append((precision, recall, f1))
    p, r, f = np.mean(scores, axis=0)
    return {"macro_precision": float(p), "macro_recall": float(r), "macro_f1": float(f)}


def _example_weights(batch: Batch) -> jax.Array:
    return batch["weights"].astype(jnp.float32) * (batch["labels"] >= 0)


@dataclasses.dataclass(frozen=True)
class PairPlan:
    """What sequence classification reads from its data, once (`DataPlan.state`): the label set
    and the encoded training rows."""

    labels: tuple[str, ...]
    train_rows: dict[str, np.ndarray]


def _planned(ctx: DataContext) -> PairPlan:
    if ctx.plan is None or not isinstance(ctx.plan.state, PairPlan):
        raise RuntimeError("plan_data must run before the objective's batches are read (its "
                           "plan comes back in DataContext.plan)")
    return ctx.plan.state


class SequenceClassification(ObjectiveDefaults):
    name = "sequence_classification"
    head = "sequence_classification"
    Config = SequenceClassificationConfig
    selection = EvalSelection("accuracy", "max")
    summary_keys = ("loss", "accuracy")

    def __init__(self, config: SequenceClassificationConfig | None = None):
        self.config = config or SequenceClassificationConfig()
        self.config.validate()

    # -- labels, data plan and model ------------------------------------------------------------
    def _read_train(self, data) -> tuple[tuple[str, ...], list[pairs.Example]]:
        """(the label set, this fold's training examples)."""
        per_file = [(spec, pairs.read_examples(spec, language=self.config.language))
                    for spec in data.train_files]
        examples = [e for _, read in per_file for e in read]
        if len({e.text_pair is not None for e in examples}) > 1:
            raise FlaxlmError(f"{', '.join(data.train_files)}: mixes single texts and text pairs")
        fixed = self.config.label_names()
        for spec, read in per_file:
            unknown = sorted({e.label for e in read} - set(fixed)) if fixed else []
            if unknown:
                raise FlaxlmError(f"{spec}: label {unknown[0]!r} is not in {SECTION}.labels "
                                  f"({', '.join(fixed)})")
        seen = sorted({e.label for e in examples})  # every fold's: the same label set in each
        labels = fixed or tuple(seen)
        if len(labels) < 2:
            raise FlaxlmError(f"{', '.join(data.train_files)}: only the label {seen[0]!r}; a "
                              "classifier needs two or more")
        return labels, finetune_config.split(examples, data.folds, data.fold)[0]

    @staticmethod
    def _encode(ctx: DataContext, labels: tuple[str, ...], examples) -> pair_batches.Encoded:
        return pair_batches.encode(ctx.tokenizer, examples, ctx.data.seq_len, {
            name: i
            for i, name in enumerate(labels)
        }, token_types=ctx.token_types)

    def plan_data(self, ctx: DataContext) -> DataPlan:
        """Reads and encodes the training data: the label set fixes the head's width."""
        labels, examples = self._read_train(ctx.data)
        encoded = self._encode(ctx, labels, examples)
        second_type = int(encoded.rows["token_type_ids"].max(initial=0))
        if second_type >= ctx.type_vocab_size > 0:
            raise FlaxlmError("text pairs need token type 1 for the second segment, but "
                              f"model.type_vocab_size={ctx.type_vocab_size} (a model without "
                              "token types, 0 as DistilBERT, tells the segments apart by [SEP] "
                              "alone)")
        kind = "text pairs" if examples[0].text_pair is not None else "texts"
        return DataPlan(
            model_overrides={"num_labels": len(labels)}, run_record={"labels": list(labels)},
            epochs=self.config.epochs, examples_per_epoch=len(examples),
            state=PairPlan(labels, encoded.rows),
            notes=(f"sequence classification: {len(labels)} labels ({', '.join(labels)}); "
                   f"{len(examples):,} training {kind}, {encoded.truncated:,} truncated to "
                   f"data.seq_len={ctx.data.seq_len} (longest segment first)", ))

    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> SequenceClassifierModel:
        model = SequenceClassifierModel(config, rngs=rngs)
        redraw_fresh(model, rngs, self.config.fresh_init)
        return model

    def init_rules(self, has_init_from: bool) -> tuple[InitRule, ...]:
        # The encoder (its pooler included, when the source has one); the head starts fresh.
        return (InitRule("encoder"), ) if has_init_from else ()

    def lr_scales(self, config: ModelConfig, param_paths: list[str]) -> dict[str, float] | None:
        return finetune_lr_scales(config.num_layers, param_paths, self.config.layer_decay,
                                  self.config.layer_decay_style, self.config.head_lr_scale)

    # -- data ----------------------------------------------------------------------------------
    def train_batches(self, ctx: DataContext,
                      start_example: int) -> Iterator[dict[str, np.ndarray]]:
        return pair_batches.train_stream(
            _planned(ctx).train_rows, seed=ctx.seed, host_batch_size=ctx.host_batch_size,
            start_example=start_example, process_index=ctx.process_index,
            process_count=ctx.process_count, buckets=ctx.data.length_buckets)

    def eval_batches(self, ctx: DataContext) -> list[dict[str, np.ndarray]]:
        labels = _planned(ctx).labels
        if ctx.data.folds and ctx.data.fold >= 0:
            held_out = finetune_config.split([
                e for spec in ctx.data.train_files
                for e in pairs.read_examples(spec, language=self.config.language)
            ], ctx.data.folds, ctx.data.fold)[1]
            sources = [(f"fold {ctx.data.fold} of {ctx.data.folds}", held_out)]
        else:
            sources = [(spec, pairs.read_examples(spec, language=self.config.language))
                       for spec in ctx.data.eval_files]
        examples = []
        for spec, read in sources:
            unknown = sorted({e.label for e in read} - set(labels))
            if unknown and ctx.process_index == 0:
                count = sum(e.label in unknown for e in read)
                print(
                    f"flaxlm: {spec}: label(s) {', '.join(map(repr, unknown))} ({count} "
                    "examples) are not in the training labels; scored as errors", flush=True)
            examples += read
        encoded = self._encode(ctx, labels, examples)
        if ctx.process_index == 0:
            print(
                f"flaxlm: eval: {len(examples):,} examples, {encoded.truncated:,} truncated to "
                f"data.seq_len={ctx.data.seq_len}", flush=True)
        return pair_batches.eval_batches(encoded.rows, host_batch_size=ctx.host_batch_size,
                                         process_index=ctx.process_index,
                                         process_count=ctx.process_count,
                                         buckets=ctx.data.length_buckets)

    def batch_spec(self, global_batch: int, data) -> dict[str, jax.ShapeDtypeStruct]:
        rows = jax.ShapeDtypeStruct((global_batch, data.seq_len), jnp.int32)
        return {
            **{
                k: rows
                for k in pair_batches.ROW_KEYS
            }, "labels": jax.ShapeDtypeStruct((global_batch, ), jnp.int32),
            "weights": jax.ShapeDtypeStruct((global_batch, ), jnp.float32)
        }

    def real_counts(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        tokens = float(np.count_nonzero(host_batch["attention_mask"]))
        # Each real token attends over the batch's (cut) length: the attention work done.
        return {
            "tokens": tokens,
            "examples": float(np.count_nonzero(host_batch["weights"])),
            "token_keys": tokens * host_batch["attention_mask"].shape[1]
        }

    # -- loss ----------------------------------------------------------------------------------
    def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
        return {"examples": jnp.maximum(jnp.sum(_example_weights(batch)), 1.0)}

    def _xent(self, logits_BxC: jax.Array, batch: Batch) -> tuple[jax.Array, jax.Array]:
        """(cross-entropy, correct) per example; an unknown label's row is masked by its weight."""
        labels_B = jnp.maximum(batch["labels"], 0)
        max_B = jax.lax.stop_gradient(logits_BxC.max(axis=-1))
        shifted_BxC = logits_BxC - max_B[:, None]
        label_B = jnp.take_along_axis(shifted_BxC, labels_B[:, None], axis=-1)[:, 0]
        xent_B = jnp.log(jnp.sum(jnp.exp(shifted_BxC), axis=-1)) - label_B
        return xent_B, (label_B >= 0.0).astype(jnp.float32)

    def loss(self, model: SequenceClassifierModel, batch: Batch, normalizers: Mapping[str,
                                                                                      jax.Array], *,
             dtype, dropout_key: jax.Array | None) -> tuple[jax.Array, Sums]:
        xent_B, correct_B = self._xent(model(batch, dtype=dtype, dropout_key=dropout_key), batch)
        weights_B = _example_weights(batch)
        sums = {
            "loss_sum": jnp.sum(xent_B * weights_B),
            "correct_sum": jnp.sum(correct_B * weights_B),
            "examples": jnp.sum(weights_B)
        }
        return sums["loss_sum"] / normalizers["examples"], sums

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        examples = jnp.maximum(sums["examples"], 1.0)
        return {
            "loss": sums["loss_sum"] / examples,
            "accuracy": sums["correct_sum"] / examples,
            "examples": sums["examples"]
        }

    # -- evaluation ----------------------------------------------------------------------------
    def eval_outputs(self, model: SequenceClassifierModel, batch: Batch, *,
                     dtype) -> Mapping[str, jax.Array]:
        logits_BxC = model(batch, dtype=dtype, dropout_key=None)
        xent_B, _ = self._xent(logits_BxC, batch)
        return {"predictions": jnp.argmax(logits_BxC, axis=-1).astype(jnp.int32), "xent": xent_B}

    def eval_metrics(self, outputs, batches, plan: DataPlan | None = None) -> dict[str, float]:
        real_N = np.concatenate([b["weights"] for b in batches]) > 0
        gold_N = np.concatenate([b["labels"] for b in batches])[real_N]
        pred_N = np.concatenate([o["predictions"] for o in outputs])[real_N]
        xent_N = np.concatenate([o["xent"] for o in outputs])[real_N]
        known_N = gold_N >= 0
        return {
            "loss": float(np.mean(xent_N[known_N])) if known_N.any() else float("nan"),
            "accuracy": float(np.mean(pred_N == gold_N)),
            "examples": float(len(gold_N)),
            **macro_scores(gold_N, pred_N)
        }

    # -- cost ----------------------------------------------------------------------------------
    def train_flops(self, config: ModelConfig, seq_len: int, counts: Mapping[str, float]) -> float:
        d = config.hidden_size
        # The body per real token; the head (a D×D dense or pooler and the D×C output) once per
        # example, on its first token only.
        head_params = d * d + d * config.num_labels
        token_keys = counts.get("token_keys", counts["tokens"] * seq_len)
        return (encoder_train_flops_cut(config, counts["tokens"], token_keys) +
                6.0 * head_params * counts["examples"])

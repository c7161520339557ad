"""Token classification (POS, NER): a fresh classifier on a loaded encoder, one label per word.

Words are labelled on their first sub-token (flaxlm/data/word_windows.py: encoding, windows of long
sentences). The label set is the training data's (all folds' with `finetune.folds`), in Python's
string order (code points: with IOB2 labels every `B-*` comes first, then every `I-*`, and `O`
last); it fixes the classifier's width and is saved in the workdir's config.json as "labels"
(export's id2label). The loss is cross-entropy over labelled first sub-tokens divided by their
number over the global batch. Evaluation maps predictions back to words and scores them on the host
(flaxlm/objectives/word_metrics.py): accuracy and token-level macro P/R/F1 always, entity P/R/F1
(seqeval's default mode) when every label is IOB-shaped; a gold label the training data never had
scores as an error.

Layer-wise learning-rate decay (`finetune.layer_decay` = d, 1.0 = off), for an encoder of L layers:
classifier (and pooler) × 1, layer L-1 (the top) × d, layer i × d^(L-i), embeddings and
embeddings_project × d^(L+1); `finetune.layer_decay_style=electra` gives one power more below the
head, as ELECTRA's fine-tuning does (flaxlm/optim.py `layer_decay_scales`). `finetune.head_lr_scale`
multiplies the classifier's rate (not the pooler's) on top: flaxlm/optim.py `finetune_lr_scales`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxlm.convert.mappings.distilbert import check_distilbert_token_dropout
from flaxlm.data import labelled, length_buckets
from flaxlm.data.word_windows import Rows, batch_of, encode_rows
from flaxlm.errors import FlaxlmError, check_choice
from flaxlm.flops import encoder_train_flops_cut
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import TokenClassifierModel
from flaxlm.models.layers import FRESH_INITS, redraw_fresh
from flaxlm.objectives import finetune_config
from flaxlm.objectives.word_metrics import entity_scores, token_scores
from flaxlm.optim import LAYER_DECAY_STYLES, check_head_lr_scale, finetune_lr_scales
from flaxlm.run.protocol import (Batch, DataContext, DataPlan, EvalSelection, InitRule,
                                 ObjectiveDefaults, Sums)
from flaxlm.run.results import test_context

_SELECTIONS = ("macro_f1", "entity_f1", "accuracy")
_IOB = re.compile(r"^(O|[BIES]-.+)$")
# Batch entries with a length axis, cut to the batch's length bucket.
_LENGTH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "label_weights",
                "word_index")


@dataclasses.dataclass(frozen=True)
class TokenClassificationConfig:
    """`objective.token_classification.*` keys; `epochs` and `layer_decay` are set from
    `finetune.*` (flaxlm/objectives/finetune_config.py)."""

    format: str = "conllu"  # conllu | conll2002 | wikiner | panx (flaxlm/data/labelled.py)
    epochs: int = 0  # > 0: train.steps = epochs × steps per epoch, evaluated after each epoch
    layer_decay: float = 1.0  # layer-wise LR decay factor (see the module docstring); 1.0: off
    layer_decay_style: str = "flaxlm"  # or "electra" (flaxlm/optim.py layer_decay_scales)
    head_lr_scale: float = 1.0  # the fresh classifier's rate factor (flaxlm/optim.py)
    fresh_init: str = "truncated_normal"  # | normal | glorot_uniform (layers.py FRESH_INITS)
    selection: str = "macro_f1"  # the eval metric that picks the best epoch: macro_f1 | entity_f1

    def validate(self) -> None:
        key = "objective.token_classification"
        check_choice(f"{key}.format", self.format, labelled.FORMATS)
        if self.epochs < 0:
            raise FlaxlmError(f"finetune.epochs must be >= 0, got {self.epochs}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise FlaxlmError(f"finetune.layer_decay must be in (0, 1], got {self.layer_decay}")
        check_choice("finetune.layer_decay_style", self.layer_decay_style, LAYER_DECAY_STYLES)
        check_head_lr_scale(self.head_lr_scale)
        check_choice("finetune.fresh_init", self.fresh_init, FRESH_INITS)
        check_choice(f"{key}.selection", self.selection, _SELECTIONS)


@dataclasses.dataclass(frozen=True)
class _EvalSet:
    rows: Rows  # `sentence_N` numbers sentences across every planned eval set
    lengths_N: np.ndarray  # real tokens of each row


@dataclasses.dataclass(frozen=True)
class TokenPlan:
    """What token classification reads from its data, once (`DataPlan.state`): the label set,
    the encoded training rows, and every eval set the run scores (dev or the held-out fold, and
    data.test_files) with the gold labels of their sentences."""

    labels: tuple[str, ...]
    train_rows: Rows
    train_lengths_N: np.ndarray
    eval_sets: Mapping[tuple, _EvalSet]  # by `_eval_key(data config)`
    gold: tuple[tuple[str, ...], ...]  # by the `sentence` id eval batches carry


def _eval_key(data) -> tuple:
    return (tuple(data.eval_files), data.folds if data.fold >= 0 else 0, data.fold)


def _planned(ctx: DataContext) -> TokenPlan:
    if ctx.plan is None or not isinstance(ctx.plan.state, TokenPlan):
        raise RuntimeError("plan_data must run before the objective's batches are read (its "
                           "plan comes back in DataContext.plan)")
    return ctx.plan.state


def epoch_order(seed: int, epoch: int, num_rows: int) -> np.ndarray:
    """The training rows' order in `epoch`: a permutation seeded by (seed, epoch) alone, so a
    resumed run and every process draw the same one."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def _iob(labels: tuple[str, ...]) -> bool:
    return all(_IOB.match(label) for label in labels)


class TokenClassification(ObjectiveDefaults):
    name = "token_classification"
    head = "token_classification"
    Config = TokenClassificationConfig
    summary_keys = ("loss", "accuracy")

    def __init__(self, config: TokenClassificationConfig | None = None):
        self.config = config or TokenClassificationConfig()
        self.config.validate()
        self.selection = EvalSelection(self.config.selection, "max")

    # -- model and weights -----------------------------------------------------------------------
    def build_model(self, config: ModelConfig, rngs: nnx.Rngs) -> TokenClassifierModel:
        check_distilbert_token_dropout(config)  # stops the run before training, not at export
        model = TokenClassifierModel(config, rngs=rngs)
        redraw_fresh(model, rngs, self.config.fresh_init)
        return model

    def init_rules(self, has_init_from: bool) -> tuple[InitRule, ...]:
        # The encoder (with its pooler, if both have one) is loaded; the classifier starts fresh.
        return (InitRule("encoder"), ) if has_init_from else ()

    def lr_scales(self, config: ModelConfig, param_paths: list[str]) -> dict[str, float] | None:
        return finetune_lr_scales(config.num_layers, param_paths, self.config.layer_decay,
                                  self.config.layer_decay_style, self.config.head_lr_scale)

    # -- data ------------------------------------------------------------------------------------
    def plan_data(self, ctx: DataContext) -> DataPlan:
        every = labelled.read_files(ctx.data.train_files, self.config.format)
        labels = labelled.label_vocabulary(every)  # the same for every fold
        train, _ = finetune_config.split(every, ctx.data.folds, ctx.data.fold)
        self._check_selection(labels)
        train_rows = self._rows(train, labels, ctx)
        notes = [
            f"token classification: {len(labels)} labels from the training data; "
            f"{len(train)} train sentences → {len(train_rows)} rows of "
            f"{ctx.data.seq_len} tokens ({train_rows.split_sentences} split into "
            "overlapping windows)"
        ]
        if ctx.data.folds and ctx.data.fold >= 0:
            notes.append(f"fold {ctx.data.fold} of {ctx.data.folds}: {len(every) - len(train)} "
                         f"of the {len(every)} training sentences held out for evaluation")
        eval_sets, gold = {}, []
        for data in (ctx.data, test_context(ctx).data):
            if (data.eval_files or data.fold >= 0) and _eval_key(data) not in eval_sets:
                sentences = self._eval_sentences(data)
                notes += self._unseen_labels(sentences, labels, data)
                rows = self._rows(sentences, labels, ctx)
                rows = dataclasses.replace(rows, sentence_N=rows.sentence_N + len(gold))
                gold += [s.labels for s in sentences]
                eval_sets[_eval_key(data)] = _EvalSet(
                    rows, length_buckets.row_lengths(rows.input_ids_NxL != ctx.tokenizer.pad_id))
        state = TokenPlan(
            labels, train_rows,
            length_buckets.row_lengths(train_rows.input_ids_NxL != ctx.tokenizer.pad_id), eval_sets,
            tuple(gold))
        return DataPlan(model_overrides={"num_labels": len(labels)},
                        run_record={"labels": list(labels)}, epochs=self.config.epochs,
                        examples_per_epoch=len(train_rows), notes=tuple(notes), state=state)

    def _rows(self, sentences: list[labelled.Sentence], labels: tuple[str, ...],
              ctx: DataContext) -> Rows:
        ids = {label: i for i, label in enumerate(labels)}
        return encode_rows(sentences, ctx.tokenizer, ids, ctx.data.seq_len)

    def _eval_sentences(self, data) -> list[labelled.Sentence]:
        """`data.eval_files`, or the held-out fold of the training files."""
        if data.folds and data.fold >= 0:
            return finetune_config.split(labelled.read_files(data.train_files, self.config.format),
                                         data.folds, data.fold)[1]
        return labelled.read_files(data.eval_files, self.config.format)

    @staticmethod
    def _unseen_labels(sentences, labels, data) -> list[str]:
        """A label the training data lacks is reported in one line; it scores as an error."""
        unseen: dict[str, int] = {}
        for label in (x for s in sentences for x in s.labels if x not in labels):
            unseen[label] = unseen.get(label, 0) + 1
        if not unseen:
            return []
        return [
            f"{', '.join(data.eval_files) or 'held-out fold'}: labels not in the training "
            "data (scored as errors): " + ", ".join(f"{k} ({n} words)"
                                                    for k, n in sorted(unseen.items()))
        ]

    def train_batches(self, ctx: DataContext,
                      start_example: int) -> Iterator[dict[str, np.ndarray]]:
        """Global example g is slot g mod (S·G) of epoch g // (S·G), S = steps per epoch: rows in
        a fresh permutation per epoch (seeded by (seed, epoch)), then filler rows that complete the
        last batch. Host p takes rows [p·B, (p+1)·B) of each global batch, cut to the length
        bucket of the global batch's longest row."""
        plan = _planned(ctx)
        rows = plan.train_rows
        B, G = ctx.host_batch_size, ctx.host_batch_size * ctx.process_count
        slots = -(-len(rows) // G) * G
        g_G = start_example + np.arange(G)
        mine = slice(ctx.process_index * B, (ctx.process_index + 1) * B)
        orders: dict[int, np.ndarray] = {}
        while True:
            epoch_G, slot_G = g_G // slots, g_G % slots
            index_G = np.full(G, -1)
            for epoch in np.unique(epoch_G):
                if epoch not in orders:
                    orders = {epoch: epoch_order(ctx.seed, epoch, len(rows))}
                here = (epoch_G == epoch) & (slot_G < len(rows))
                index_G[here] = orders[epoch][slot_G[here]]
            yield self._cut(batch_of(rows, index_G[mine], ctx.tokenizer), index_G, ctx,
                            plan.train_lengths_N)
            g_G = g_G + G

    def eval_batches(self, ctx: DataContext) -> list[dict[str, np.ndarray]]:
        """Batches of `data.eval_files` (or the held-out fold), as `plan_data` encoded them."""
        eval_set = _planned(ctx).eval_sets.get(_eval_key(ctx.data))
        if eval_set is None:
            raise RuntimeError(f"eval set {_eval_key(ctx.data)} was not planned: plan_data "
                               "encodes data.eval_files (or the held-out fold) and test_files")
        rows = eval_set.rows
        B, G = ctx.host_batch_size, ctx.host_batch_size * ctx.process_count
        batches = []
        for first in range(0, len(rows), G):
            g_G = first + np.arange(G)
            index_G = np.where(g_G < len(rows), g_G, -1)
            mine = index_G[ctx.process_index * B:(ctx.process_index + 1) * B]
            batches.append(
                self._cut(batch_of(rows, mine, ctx.tokenizer), index_G, ctx, eval_set.lengths_N))
        return batches

    def _cut(self, batch: dict[str, np.ndarray], index_G: np.ndarray, ctx: DataContext,
             lengths_N: np.ndarray) -> dict[str, np.ndarray]:
        """The host batch cut to the bucket of its global batch's longest row (a filler row, -1,
        is [CLS] [SEP]); every process computes the same length from the same global indices."""
        longest = max(2, int(np.max(lengths_N[index_G[index_G >= 0]], initial=0)))
        buckets = ctx.data.length_buckets or (ctx.data.seq_len, )
        return length_buckets.cut(batch, length_buckets.bucket_length(longest, buckets),
                                  _LENGTH_KEYS)

    def batch_spec(self, global_batch: int, data) -> dict:
        rows, shape = (global_batch, ), (global_batch, data.seq_len)
        spec = {
            k: (shape, jnp.int32)
            for k in ("input_ids", "attention_mask", "token_type_ids", "labels", "word_index")
        }
        spec.update(label_weights=(shape, jnp.float32), sentence=(rows, jnp.int32))
        return {k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in spec.items()}

    def real_counts(self, host_batch: Mapping[str, np.ndarray]) -> dict[str, float]:
        tokens = float(np.count_nonzero(host_batch["attention_mask"]))
        # Each real token attends over the batch's (cut) length: the attention work done.
        return {
            "tokens": tokens,
            "labelled": float(np.count_nonzero(host_batch["label_weights"])),
            "token_keys": tokens * host_batch["attention_mask"].shape[1]
        }

    # -- loss ------------------------------------------------------------------------------------
    def normalizers(self, batch: Batch) -> dict[str, jax.Array]:
        return {"labelled": jnp.maximum(jnp.sum(batch["label_weights"].astype(jnp.float32)), 1.0)}

    def _sums(self, logits_BxLxC: jax.Array, batch: Batch) -> Sums:
        weights_BxL = batch["label_weights"].astype(jnp.float32)
        log_z_BxL = jax.nn.logsumexp(logits_BxLxC, axis=-1)
        gold_BxL = jnp.take_along_axis(logits_BxLxC, batch["labels"][..., None], axis=-1)[..., 0]
        correct_BxL = (jnp.argmax(logits_BxLxC, axis=-1) == batch["labels"]).astype(jnp.float32)
        return {
            "loss_sum": jnp.sum((log_z_BxL - gold_BxL) * weights_BxL),
            "correct_sum": jnp.sum(correct_BxL * weights_BxL),
            "weight_sum": jnp.sum(weights_BxL)
        }

    def loss(self, model: TokenClassifierModel, batch: Batch, normalizers: Mapping[str, jax.Array],
             *, dtype, dropout_key: jax.Array | None) -> tuple[jax.Array, Sums]:
        sums = self._sums(model(batch, dtype=dtype, dropout_key=dropout_key), batch)
        return sums["loss_sum"] / normalizers["labelled"], sums

    def metrics(self, sums: Sums) -> dict[str, jax.Array]:
        weight = jnp.maximum(sums["weight_sum"], 1.0)
        return {
            "loss": sums["loss_sum"] / weight,
            "accuracy": sums["correct_sum"] / weight,
            "labelled_tokens": sums["weight_sum"]
        }

    # -- evaluation ------------------------------------------------------------------------------
    def eval_outputs(self, model: TokenClassifierModel, batch: Batch, *, dtype) -> dict:
        logits_BxLxC = model(batch, dtype=dtype, dropout_key=None)
        return {
            **self._sums(logits_BxLxC, batch), "predictions": jnp.argmax(logits_BxLxC,
                                                                         axis=-1).astype(jnp.int32)
        }

    def word_predictions(self, outputs, batches, plan: DataPlan) -> tuple[list, list[list[str]]]:
        """(gold, predicted) labels of each sentence of the eval set `batches` hold, word by
        word, from the window owning each word."""
        state: TokenPlan = plan.state
        ids = np.unique(np.concatenate([b["sentence"] for b in batches]))
        ids = ids[ids >= 0]
        gold = [state.gold[i] for i in ids]
        predicted = {i: [""] * len(g) for i, g in zip(ids, gold)}
        for out, batch in zip(outputs, batches, strict=True):
            rows, columns = np.nonzero(batch["word_index"] >= 0)
            for r, c in zip(rows, columns):
                sentence = predicted[batch["sentence"][r]]
                sentence[batch["word_index"][r, c]] = state.labels[out["predictions"][r, c]]
        missing = sum(label == "" for s in predicted.values() for label in s)
        if missing:
            raise RuntimeError(f"{missing} eval words got no prediction: the windows lost them")
        return gold, [predicted[i] for i in ids]

    def eval_metrics(self, outputs, batches, plan: DataPlan) -> dict[str, float]:
        sums = {k: float(sum(np.sum(o[k]) for o in outputs)) for k in ("loss_sum", "weight_sum")}
        gold, predicted = self.word_predictions(outputs, batches, plan)
        results = {
            "loss": sums["loss_sum"] / max(sums["weight_sum"], 1.0),
            **token_scores(gold, predicted)
        }
        if _iob(plan.state.labels):
            results.update(entity_scores(gold, predicted))
        return results

    def _check_selection(self, labels: tuple[str, ...]) -> None:
        if self.selection.metric == "entity_f1" and not _iob(labels):
            odd = [x for x in labels if not _IOB.match(x)][:3]
            raise FlaxlmError(f"objective.token_classification.selection=entity_f1 needs IOB "
                              f"labels such as B-PER, I-PER, O; the training data has {odd}")

    # -- cost ------------------------------------------------------------------------------------
    def train_flops(self, config: ModelConfig, seq_len: int, counts: Mapping[str, float]) -> float:
        # The body and the D×C classifier per real token; attention over the length each batch
        # was cut to (`token_keys`).
        token_keys = counts.get("token_keys", counts["tokens"] * seq_len)
        return (encoder_train_flops_cut(config, counts["tokens"], token_keys) +
                counts["tokens"] * 6.0 * config.hidden_size * config.num_labels)

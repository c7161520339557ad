"""The sequence-classification objective on the trainer's seams: exact accumulation, labels,
layer-wise LR decay, host-side metrics."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from sklearn.metrics import precision_recall_fscore_support

from flaxlm.data.pipeline import DataConfig
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from flaxlm.objectives import registry
from flaxlm.objectives.sequence import (SequenceClassification, SequenceClassificationConfig,
                                        macro_scores)
from flaxlm.run.protocol import DataContext
from tests.finetune_seq.conftest import DEV_TSV, TRAIN_TSV

CONFIG = preset("tiny", hidden_dropout=0.0, attention_dropout=0.0, classifier_dropout=0.0)


def _ctx(tokenizer, train=(TRAIN_TSV, ), eval_files=(DEV_TSV, ), seq_len=48, batch=16):
    return DataContext(
        DataConfig(train_files=tuple(train), eval_files=tuple(eval_files), seq_len=seq_len),
        tokenizer, seed=0, host_batch_size=batch)


def _planned(objective, ctx, config=CONFIG):
    """(the model config the trainer builds after the objective's data plan, the context that
    hands the plan back to the objective)."""
    plan = objective.plan_data(ctx)
    return dataclasses.replace(config, **plan.model_overrides), dataclasses.replace(ctx, plan=plan)


def _tsv(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("text\ttext_pair\tlabel\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in rows),
                    encoding="utf-8")
    return str(path)


def test_registered_with_its_config_section():
    section = registry.config_section()
    assert dict(section.sequence_classification) == {"labels": "", "language": "es"}
    # epochs and layer_decay come from the `finetune` section shared by fine-tuning objectives.
    sections = registry.with_finetune("sequence_classification", {"sequence_classification": {}}, {
        "epochs": 2,
        "layer_decay": 0.8
    })
    objective = registry.make_objective("sequence_classification", sections)
    assert (objective.config.epochs, objective.config.layer_decay) == (2, 0.8)
    with pytest.raises(FlaxlmError, match="layer_decay must be in"):
        SequenceClassification(SequenceClassificationConfig(layer_decay=0.0))
    with pytest.raises(FlaxlmError, match="labels='a': needs two or more"):
        SequenceClassification(SequenceClassificationConfig(labels="a"))


def _init(objective, model_config):
    """(graphdef, trained-looking params) drawn in numpy: no initialization to compile."""
    graphdef, abstract = nnx.split(
        nnx.eval_shape(lambda: objective.build_model(model_config, nnx.Rngs(0))), nnx.Param)
    rng = np.random.default_rng(0)
    return graphdef, jax.tree.map(lambda a: rng.normal(0, 0.1, a.shape).astype(np.float32),
                                  nnx.to_pure_dict(abstract))


def test_micro_batch_losses_add_up_to_the_batch_loss(es_unigram):
    # What makes grad_accum_steps exact (the step itself is proven on tests/toy_objective.py):
    # each micro-batch's loss divided by the whole batch's example count adds up to the batch's.
    objective = SequenceClassification()
    model_config, ctx = _planned(objective, _ctx(es_unigram, seq_len=24, batch=8))
    graphdef, params = _init(objective, model_config)
    batch = next(objective.train_batches(ctx, 0))
    batch["weights"][[1, 2, 6]] = 0.0  # padding rows: the micro-batches' counts differ
    micro = [{k: v[i::4] for k, v in batch.items()} for i in range(4)]
    assert len({float(m["weights"].sum()) for m in micro}) > 1

    @jax.jit
    def grad(p, b, normalizers):
        return jax.grad(lambda p: objective.loss(nnx.merge(graphdef, p), b, normalizers, dtype=jnp.
                                                 float32, dropout_key=None)[0])(p)

    whole = objective.normalizers(batch)
    exact = jax.device_get(grad(params, batch, whole))
    accumulated = jax.device_get(
        jax.tree.map(lambda *g: sum(g), *[grad(params, m, whole) for m in micro]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-7), accumulated,
                 exact)
    assert float(optax.global_norm(exact)) > 1e-3


def test_labels_from_train_sorted_or_fixed(es_unigram, tmp_path, capsys):
    objective = SequenceClassification(SequenceClassificationConfig(epochs=3))
    before = dict(vars(objective))
    plan = objective.plan_data(_ctx(es_unigram, seq_len=24))
    assert vars(objective) == before  # the plan is returned, nothing is kept on the objective
    assert plan.state.labels == ("different", "same")
    assert plan.model_overrides == {"num_labels": 2}
    assert plan.run_record == {"labels": ["different", "same"]}
    assert (plan.epochs, plan.examples_per_epoch) == (3, 160)
    truncated = re.search(r"160 training text pairs, (\d+) truncated to data.seq_len=24",
                          plan.notes[0])
    assert truncated and int(truncated.group(1)) > 0

    fixed = SequenceClassification(SequenceClassificationConfig(labels="same,other,different"))
    fixed_plan = fixed.plan_data(_ctx(es_unigram))
    assert fixed_plan.model_overrides == {"num_labels": 3}
    assert fixed_plan.state.labels == ("same", "other", "different")

    narrow = SequenceClassification(SequenceClassificationConfig(labels="same,other"))
    with pytest.raises(
            FlaxlmError, match=r"train.tsv: label 'different' is not in "
            r"objective.sequence_classification.labels"):
        narrow.plan_data(_ctx(es_unigram))

    one = _tsv(tmp_path, "one.tsv", [("a", "b", "x"), ("c", "d", "x")])
    with pytest.raises(FlaxlmError, match="one.tsv: only the label 'x'"):
        SequenceClassification().plan_data(_ctx(es_unigram, [one]))


def test_label_only_in_eval_is_reported_and_scored_as_error(es_unigram, tmp_path, capsys):
    dev = _tsv(tmp_path, "dev.tsv", [("uno dos", "tres", "same"), ("cuatro", "cinco", "odd"),
                                     ("seis", "siete", "odd")])
    objective = SequenceClassification()
    _, ctx = _planned(objective, _ctx(es_unigram, eval_files=[dev], batch=4))
    batches = objective.eval_batches(ctx)
    assert "dev.tsv: label(s) 'odd' (2 examples) are not in the training labels" in (
        capsys.readouterr().out)
    assert batches[0]["labels"].tolist()[:3] == [1, -1, -1]
    outputs = [{
        "predictions": np.array([1, 0, 1, 1], np.int32),
        "xent": np.array([0.5, 9.0, 9.0, 7.0], np.float32)
    }]
    metrics = objective.eval_metrics(outputs, batches)
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["loss"] == pytest.approx(0.5)  # over examples with a known label only
    assert metrics["examples"] == 3


def test_macro_scores_equal_sklearn():
    rng = np.random.default_rng(0)
    gold = rng.integers(-1, 3, 200)  # -1: a label the training data lacks
    pred = rng.integers(0, 3, 200)
    pred[:30] = gold[:30].clip(0)
    p, r, f, _ = precision_recall_fscore_support(gold, pred, average="macro", zero_division=0)
    assert macro_scores(gold, pred) == pytest.approx(
        {
            "macro_precision": p,
            "macro_recall": r,
            "macro_f1": f
        }, rel=1e-12)


def test_wordpiece_pairs_need_two_token_types(es_wordpiece):
    objective = SequenceClassification()
    one_type = dataclasses.replace(_ctx(es_wordpiece), type_vocab_size=1)
    with pytest.raises(FlaxlmError, match="model.type_vocab_size=1"):
        objective.plan_data(one_type)
    two = dataclasses.replace(preset("tiny"), arch="bert", pooler=True, type_vocab_size=2)
    model_config, _ = _planned(objective, dataclasses.replace(one_type, type_vocab_size=2), two)
    nnx.eval_shape(lambda: objective.build_model(model_config, nnx.Rngs(0)))


def test_pairs_for_a_model_without_token_types(es_wordpiece):
    """DistilBERT (type_vocab_size=0): pairs are `[CLS] a [SEP] b [SEP]` with token types all 0."""
    distilbert = preset("distilbert-base-multilingual", vocab_size=es_wordpiece.vocab_size,
                        num_layers=1, hidden_size=36, num_heads=3, intermediate_size=50)
    objective = SequenceClassification()
    planned, ctx = _planned(objective, dataclasses.replace(_ctx(es_wordpiece), token_types=False),
                            distilbert)
    nnx.eval_shape(lambda: objective.build_model(planned, nnx.Rngs(0)))
    batch = next(objective.train_batches(ctx, 0))
    assert not batch["token_type_ids"].any()
    ids_B = batch["input_ids"]
    assert ((ids_B == es_wordpiece.sep_id).sum(axis=1) == 2).all()  # one [SEP] between, one after


def test_batches_need_the_plan_handed_back(es_unigram):
    objective = SequenceClassification()
    with pytest.raises(RuntimeError, match="plan_data must run before"):
        objective.train_batches(_ctx(es_unigram), 0)
    with pytest.raises(RuntimeError, match="plan_data must run before"):
        objective.eval_batches(_ctx(es_unigram))


def test_layer_decay_scales_by_depth():
    bert = dataclasses.replace(preset("tiny"), arch="bert", pooler=True, type_vocab_size=2)
    objective = SequenceClassification(SequenceClassificationConfig(layer_decay=0.5))
    from flaxlm.models.heads import param_names
    names = param_names(nnx.eval_shape(lambda: objective.build_model(bert, nnx.Rngs(0))))
    scales = objective.lr_scales(bert, names)
    expected = {"encoder/embeddings/": 0.125, "encoder/layers/0/": 0.25, "encoder/layers/1/": 0.5}
    for name in names:
        want = next((s for prefix, s in expected.items() if name.startswith(prefix)), None)
        assert scales.get(name) == want, name  # head and pooler: absent, i.e. the base rate
    assert any(n.startswith("encoder/pooler/") for n in names)
    assert SequenceClassification().lr_scales(bert, names) is None
    # finetune.head_lr_scale: the fresh classifier only; the loaded pooler keeps the base rate.
    head = SequenceClassification(SequenceClassificationConfig(layer_decay=0.5, head_lr_scale=4.0))
    scaled = head.lr_scales(bert, names)
    assert {n
            for n in names
            if not n.startswith("encoder/")} == {n
                                                 for n, s in scaled.items() if s == 4.0} != set()
    assert {n: s for n, s in scaled.items() if s != 4.0} == scales
    with pytest.raises(FlaxlmError, match="head_lr_scale must be > 0, got 0"):
        SequenceClassificationConfig(head_lr_scale=0).validate()


def test_flops_count_real_tokens_and_examples(es_unigram):
    objective = SequenceClassification()
    _, ctx = _planned(objective, _ctx(es_unigram))
    batch = next(objective.train_batches(ctx, 0))
    counts = objective.real_counts(batch)
    assert counts["tokens"] == batch["attention_mask"].sum() < batch["attention_mask"].size
    assert counts["examples"] == 16
    assert objective.train_flops(CONFIG, 48,
                                 counts) > objective.train_flops(CONFIG, 48, {
                                     "tokens": counts["tokens"],
                                     "examples": 0.0
                                 })

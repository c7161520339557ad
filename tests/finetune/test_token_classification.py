"""Token classification on sentences cut from UD Italian ISDT / CoNLL-2002: sub-tokens map to
their words, long sentences become overlapping windows that predict every word once, an
epoch-exact resumable stream, exact accumulation, layer-wise LR decay and host-side metrics."""

import dataclasses

import jax
import numpy as np
import pytest

from flaxlm.data import labelled
from flaxlm.data.pipeline import DataConfig
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.data.word_windows import encode_rows, owning_window, window_starts
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from flaxlm.objectives.token_classification import TokenClassification, TokenClassificationConfig
from flaxlm.optim import layer_decay_scales
from flaxlm.run import results
from flaxlm.run.protocol import DataContext
from flaxlm.sharding import host_batch_to_global
from tests.finetune.test_labelled import fixture
from tests.toy_objective import key, toy_program

POS_TRAIN, POS_TEST = fixture("it_isdt-dev-head.conllu"), fixture("it_isdt-test-head.conllu")


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


def context(tokenizer, seq_len=32, batch=8, eval_files=(POS_TEST, ), process=(0, 1)):
    data = DataConfig(train_files=(POS_TRAIN, ), eval_files=eval_files, seq_len=seq_len)
    return DataContext(data, tokenizer, seed=3, host_batch_size=batch // process[1],
                       process_index=process[0], process_count=process[1])


def planned(objective, ctx):
    """(the plan, the context that hands it back to the objective), as experiment.build does."""
    plan = objective.plan_data(ctx)
    return plan, dataclasses.replace(ctx, plan=plan)


def test_first_sub_token_of_each_word_carries_its_label(tokenizer):
    sentences = labelled.read_sentences(POS_TRAIN, "conllu")
    labels = labelled.label_vocabulary(sentences)
    rows = encode_rows(sentences, tokenizer, {x: i for i, x in enumerate(labels)}, seq_len=512)
    assert len(rows) == len(sentences) and rows.split_sentences == 0
    for r, sentence in enumerate(sentences):
        columns = np.flatnonzero(rows.word_index_NxL[r] >= 0)
        words = rows.word_index_NxL[r, columns]
        assert list(words) == list(range(len(sentence.words)))  # every word once, in order
        for c, w in zip(columns, words):
            first_id = tokenizer.encode_batch([sentence.words[w]])[0][0][0]
            assert rows.input_ids_NxL[r, c] == first_id
            assert labels[rows.labels_NxL[r, c]] == sentence.labels[w]
        # Continuation sub-tokens, CLS, SEP and padding carry no weight.
        assert rows.label_weights_NxL[r].sum() == len(sentence.words)
        assert rows.input_ids_NxL[r, 0] == tokenizer.cls_id


def test_long_sentences_split_into_windows_that_own_each_word_once(tokenizer):
    sentences = labelled.read_sentences(POS_TRAIN, "conllu")
    labels = labelled.label_vocabulary(sentences)
    rows = encode_rows(sentences, tokenizer, {x: i for i, x in enumerate(labels)}, seq_len=12)
    assert rows.split_sentences > 5 and len(rows) > len(sentences)
    for s, sentence in enumerate(sentences):
        mine = np.flatnonzero(rows.sentence_N == s)
        owned = rows.word_index_NxL[mine]
        assert sorted(owned[owned >= 0]) == list(range(len(sentence.words)))
        gold = [
            labels[rows.labels_NxL[r, c]] for r in mine for c in np.argsort(rows.word_index_NxL[r])
            if rows.word_index_NxL[r, c] >= 0
        ]
        assert sorted(gold) == sorted(sentence.labels)
    # The owner is the window where the token is most central.
    starts = window_starts(25, 10)
    assert starts == [0, 5, 10, 15]
    owner = owning_window(np.arange(25), starts, 10)
    assert list(owner) == [0] * 8 + [1] * 5 + [2] * 5 + [3] * 7  # ties: the earlier window


def test_label_seen_only_in_eval_has_no_weight_but_a_word(tokenizer):
    sentence = labelled.Sentence(("Roma", "è", "bella"), ("PROPN", "INTJ", "ADJ"))
    rows = encode_rows([sentence], tokenizer, {"ADJ": 0, "PROPN": 1}, seq_len=16)
    columns = np.flatnonzero(rows.word_index_NxL[0] >= 0)
    assert list(rows.label_weights_NxL[0, columns]) == [1.0, 0.0, 1.0]
    assert list(rows.word_index_NxL[0, columns]) == [0, 1, 2]


def test_train_stream_covers_each_row_once_per_epoch_and_resumes(tokenizer):
    objective = TokenClassification()
    plan, ctx = planned(objective, context(tokenizer, seq_len=12, batch=8))
    n = plan.examples_per_epoch
    per_epoch = -(-n // 8)
    stream = objective.train_batches(ctx, 0)
    epochs = [[next(stream) for _ in range(per_epoch)] for _ in range(2)]
    for batches in epochs:
        ids = np.concatenate([b["input_ids"] for b in batches])
        real = np.concatenate([b["sentence"] for b in batches]) >= 0
        assert real.sum() == n
        rows = {tuple(r) for r in ids[real]}
        assert rows == {tuple(r) for r in plan.state.train_rows.input_ids_NxL}
    assert not np.array_equal(epochs[0][0]["input_ids"], epochs[1][0]["input_ids"])
    resumed = next(objective.train_batches(ctx, (per_epoch + 1) * 8))
    jax.tree.map(np.testing.assert_array_equal, resumed, epochs[1][1])
    # Two processes take the two halves of the same global batch.
    halves = [
        next(
            objective.train_batches(
                dataclasses.replace(context(tokenizer, 12, 8, process=(p, 2)), plan=plan), 8))
        for p in range(2)
    ]
    jax.tree.map(lambda a, b, full: np.testing.assert_array_equal(np.concatenate([a, b]), full),
                 *halves, epochs[0][1])


def test_label_only_in_a_test_set_is_reported_scored_wrong_and_dev_scores_apart(
        tokenizer, tmp_path):
    # A test file: the first eval sentence with its first word relabelled to an unseen label.
    lines = open(POS_TEST, encoding="utf-8").read().split("\n\n")[0].splitlines()
    first = next(i for i, line in enumerate(lines)
                 if line[:1].isdigit() and "-" not in line.split("\t")[0])
    columns = lines[first].split("\t")
    lines[first] = "\t".join([*columns[:3], "NOVEL", *columns[4:]])
    (tmp_path / "test.conllu").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    objective = TokenClassification()
    ctx = context(tokenizer)
    ctx = dataclasses.replace(
        ctx, data=dataclasses.replace(ctx.data, test_files=(str(tmp_path / "test.conllu"), )))
    plan, ctx = planned(objective, ctx)
    labels = plan.run_record["labels"]
    assert plan.model_overrides == {"num_labels": len(labels)} and labels == sorted(labels)
    assert any(
        "test.conllu: labels not in the training data (scored as errors): NOVEL (1 words)" in note
        for note in plan.notes)
    dev = objective.eval_batches(ctx)
    test = objective.eval_batches(results.test_context(ctx))

    def perfect(batches):
        return [{"predictions": b["labels"], "loss_sum": 0.0, "weight_sum": 1.0} for b in batches]

    # Each set is scored against its own gold, though both were read: dev predicted perfectly is
    # perfect; on test only the unseen label's word is wrong.
    assert objective.eval_metrics(perfect(dev), dev, plan)["accuracy"] == 1.0
    words = len(labelled.read_sentences(str(tmp_path / "test.conllu"), "conllu")[0].words)
    assert objective.eval_metrics(perfect(test), test,
                                  plan)["accuracy"] == pytest.approx(1 - 1 / words)
    # A set the plan did not read is refused rather than scored against no gold.
    with pytest.raises(RuntimeError, match="was not planned"):
        objective.eval_batches(
            dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, eval_files=(POS_TRAIN, ))))


def test_eval_maps_window_predictions_back_to_words(tokenizer):
    objective = TokenClassification(
        TokenClassificationConfig(format="conll2002", selection="entity_f1"))
    data = DataConfig(train_files=(fixture("esp-train-head.txt"), ),
                      eval_files=(fixture("esp-testa-head.txt"), ), seq_len=12)
    plan, ctx = planned(objective, DataContext(data, tokenizer, seed=0, host_batch_size=4))
    batches = objective.eval_batches(ctx)
    # Outputs that predict the gold label everywhere: every window-owned word is right.
    perfect = [{"predictions": b["labels"], "loss_sum": 0.0, "weight_sum": 1.0} for b in batches]
    scores = objective.eval_metrics(perfect, batches, plan)
    assert scores["accuracy"] == 1.0 and scores["entity_f1"] == 1.0
    # One word predicted wrongly somewhere inside a split sentence costs exactly that word.
    r, c = next((r, c) for r in range(4) for c in range(12)
                if batches[1]["word_index"][r, c] > 3 and batches[1]["labels"][r, c] == 8)
    wrong = [dict(o) for o in perfect]
    wrong[1] = dict(
        wrong[1], predictions=np.where((np.arange(4)[:, None] == r) & (np.arange(12) == c), 0,
                                       batches[1]["labels"]))
    words = sum(len(g) for g in plan.state.gold)
    assert objective.eval_metrics(wrong, batches, plan)["accuracy"] == pytest.approx(1 - 1 / words)


def test_selection_needs_iob_labels(tokenizer):
    objective = TokenClassification(TokenClassificationConfig(selection="entity_f1"))
    with pytest.raises(FlaxlmError, match=r"entity_f1 needs IOB labels .* has \['ADJ'"):
        objective.plan_data(context(tokenizer))
    with pytest.raises(FlaxlmError, match="layer_decay"):
        TokenClassification(TokenClassificationConfig(layer_decay=0.0))


def test_layer_decay_is_exact():
    config = preset("tiny", pooler=True, embedding_size=32, num_labels=5)  # 2 layers
    names = [
        "classifier/kernel", "encoder/pooler/dense/kernel", "encoder/layers/1/output/bias",
        "encoder/layers/0/attention/query/kernel", "encoder/embeddings/word/embedding",
        "encoder/embeddings_project/kernel"
    ]
    assert layer_decay_scales(config.num_layers, names, 0.5) == {
        "encoder/layers/1/output/bias": 0.5,
        "encoder/layers/0/attention/query/kernel": 0.25,
        "encoder/embeddings/word/embedding": 0.125,
        "encoder/embeddings_project/kernel": 0.125
    }
    # ELECTRA's _get_layer_lrs: top layer d², embeddings d^(L+2), the head the base rate.
    assert layer_decay_scales(config.num_layers, names, 0.5, "electra") == {
        "encoder/layers/1/output/bias": 0.25,
        "encoder/layers/0/attention/query/kernel": 0.125,
        "encoder/embeddings/word/embedding": 0.0625,
        "encoder/embeddings_project/kernel": 0.0625
    }
    with pytest.raises(FlaxlmError, match="no depth for parameter encoder/adapter/w"):
        layer_decay_scales(config.num_layers, ["encoder/adapter/w"], 0.5)
    with pytest.raises(FlaxlmError, match="layer_decay_style must be one of .*, got 'bert'"):
        TokenClassification(TokenClassificationConfig(layer_decay_style="bert"))


@pytest.mark.slow  # two compilations: ~50 s on the shared CPU
def test_accumulation_equals_one_batch(tokenizer):
    objective = TokenClassification()
    plan, ctx = planned(objective, context(tokenizer, seq_len=16, batch=16))
    config = dataclasses.replace(
        preset("tiny", vocab_size=tokenizer.vocab_size, hidden_dropout=0.0, attention_dropout=0.0,
               classifier_dropout=0.0), **plan.model_overrides)
    batches = [b for _, b in zip(range(2), objective.train_batches(ctx, 0))]
    results = []
    for accum in (1, 4):
        program = toy_program(objective, (2, 1, 1), accum=accum, config=config)
        state = program.init_state(key())
        for batch in batches:
            state, metrics = program.train_step(state, host_batch_to_global(program.mesh, batch))
        results.append((jax.device_get(state["params"]), jax.device_get(metrics)))
    (p1, m1), (p4, m4) = results
    np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6), p4, p1)


def test_epochs_set_steps_eval_every_decay_and_warmup():
    import os

    from flaxlm import run_config
    from flaxlm.experiment import _schedule
    from flaxlm.run.protocol import DataPlan
    from tests.conftest import REPO
    config = run_config.load(os.path.join(REPO, "configs", "ner_es_conll2002.py"))
    loop, optim, notes = _schedule(config, DataPlan(epochs=5, examples_per_epoch=100), None)
    assert (loop.steps, loop.eval_every, optim.total_steps, optim.warmup_steps) == (20, 4, 20, 2)
    assert "5 epochs × 4 steps (100 examples, batch 32) = 20 steps" in notes[0]
    # Without epochs, train.steps stays and the warmup proportion applies to its horizon.
    loop, optim, notes = _schedule(config, DataPlan(), None)
    assert (loop.steps, optim.warmup_steps, notes) == (1000, 100, ())

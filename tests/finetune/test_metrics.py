"""Metrics equal the references: entity scores = seqeval's default mode, token macro scores =
scikit-learn's macro average, on gold CoNLL-2002 / UD labels and perturbed predictions of them."""

import numpy as np
import pytest
import seqeval.metrics
from sklearn import metrics as sk

from flaxlm.data.labelled import label_vocabulary, read_sentences
from flaxlm.objectives.word_metrics import entities, entity_scores, token_scores
from tests.finetune.test_labelled import fixture


def perturbed(gold, labels, rate, seed):
    """Predictions that differ from gold at `rate` of the words, by any label: this yields every
    ill-formed IOB sequence (I- after O, type switches inside a chunk)."""
    rng = np.random.default_rng(seed)
    return [[labels[rng.integers(len(labels))] if rng.random() < rate else g for g in sentence]
            for sentence in gold]


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.4, 1.0])
def test_entity_scores_equal_seqeval_default_mode(rate):
    sentences = read_sentences(fixture("esp-testa-head.txt"), "conll2002")
    gold = [list(s.labels) for s in sentences]
    labels = list(label_vocabulary(sentences)) + ["E-PER", "S-LOC"]  # IOBES tags seqeval reads
    for seed in range(5):
        pred = perturbed(gold, labels, rate, seed)
        ours = entity_scores(gold, pred)
        assert ours["entity_precision"] == pytest.approx(
            seqeval.metrics.precision_score(gold, pred, zero_division=0), abs=1e-12)
        assert ours["entity_recall"] == pytest.approx(
            seqeval.metrics.recall_score(gold, pred, zero_division=0), abs=1e-12)
        assert ours["entity_f1"] == pytest.approx(
            seqeval.metrics.f1_score(gold, pred, zero_division=0), abs=1e-12)
    if rate == 0.0:
        assert ours["entity_f1"] == 1.0


def test_entities_follow_conlleval():
    # I- after O opens a chunk; a type switch inside a chunk closes it and opens another.
    assert entities(["I-PER", "I-PER", "O", "B-LOC", "I-ORG"]) == {("PER", 0, 1), ("LOC", 3, 3),
                                                                   ("ORG", 4, 4)}
    from seqeval.metrics.sequence_labeling import get_entities
    assert sorted(entities(["I-PER", "I-PER", "O", "B-LOC", "I-ORG"
                            ])) == sorted(get_entities(["I-PER", "I-PER", "O", "B-LOC", "I-ORG"]))


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.7])
def test_token_scores_equal_sklearn_macro(rate):
    sentences = read_sentences(fixture("it_isdt-dev-head.conllu"), "conllu")
    gold = [list(s.labels) for s in sentences]
    pred = perturbed(gold, sorted(set(label_vocabulary(sentences))), rate, seed=3)
    # One label the model never predicts (seen only in eval data) scores as an error.
    gold[0][0] = "UNSEEN"
    flat_gold = [g for s in gold for g in s]
    flat_pred = [p for s in pred for p in s]
    ours = token_scores(gold, pred)
    p, r, f, _ = sk.precision_recall_fscore_support(flat_gold, flat_pred, average="macro",
                                                    zero_division=0)
    assert (ours["macro_precision"], ours["macro_recall"], ours["macro_f1"]) == pytest.approx(
        (p, r, f), abs=1e-12)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(flat_gold, flat_pred), abs=1e-12)
    assert ours["accuracy"] < 1.0

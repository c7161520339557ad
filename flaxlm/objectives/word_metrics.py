"""Host-side metrics of word-level predictions: token-level macro P/R/F1 and accuracy (POS, the
FLARE table) and entity-level P/R/F1 over IOB chunks, equal to `seqeval`'s default mode (the
conlleval rules) — tests/finetune/test_metrics.py checks both against seqeval and scikit-learn.

Sentences are sequences of label strings; a gold label the model cannot predict (seen only in the
eval data) simply never matches, so it scores as an error.
"""

from __future__ import annotations

from typing import Sequence

Labels = Sequence[str]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def token_scores(gold: Sequence[Labels], pred: Sequence[Labels]) -> dict[str, float]:
    """Accuracy and P/R/F1 per label, macro-averaged over every label in gold or predictions
    (scikit-learn's `average="macro"`: the mean of per-label F1, not the F1 of the means)."""
    pairs = [(g, p) for gs, ps in zip(gold, pred, strict=True) for g, p in zip(gs, ps, strict=True)]
    classes = sorted({g for g, _ in pairs} | {p for _, p in pairs})
    scores = []
    for c in classes:
        hits = sum(1 for g, p in pairs if g == c and p == c)
        precision = _ratio(hits, sum(1 for _, p in pairs if p == c))
        recall = _ratio(hits, sum(1 for g, _ in pairs if g == c))
        scores.append((precision, recall, _f1(precision, recall)))
    n = max(len(scores), 1)
    return {
        "accuracy": _ratio(sum(1 for g, p in pairs if g == p), len(pairs)),
        "macro_precision": sum(s[0] for s in scores) / n,
        "macro_recall": sum(s[1] for s in scores) / n,
        "macro_f1": sum(s[2] for s in scores) / n
    }


def _tag_and_type(label: str) -> tuple[str, str]:
    # conlleval reads the first character as the chunk tag and what follows its dash as the type.
    return label[:1], label[1:].split("-", 1)[-1] or "_"


def entities(labels: Labels) -> set[tuple[str, int, int]]:
    """(type, first word, last word) of every chunk under the conlleval rules: a chunk starts at
    B/S, or at I/E after O, after a closed chunk (E/S) or after another type; it ends before a
    B/S/O, after E/S, or where the type changes."""
    found = set()
    start, previous_tag, previous_type = None, "O", ""
    for i, label in enumerate(list(labels) + ["O"]):
        tag, type_ = _tag_and_type(label)
        type_changed = type_ != previous_type
        ends = previous_tag in ("E", "S") or (previous_tag in ("B", "I") and tag in ("B", "S", "O")) \
            or (previous_tag not in ("O", ".") and type_changed)
        if ends and start is not None:
            found.add((previous_type, start, i - 1))
            start = None
        begins = tag in ("B", "S") or (tag in ("I", "E") and previous_tag in ("E", "S", "O")) \
            or (tag not in ("O", ".") and type_changed)
        if begins:
            start = i
        previous_tag, previous_type = tag, type_
    return found


def entity_scores(gold: Sequence[Labels], pred: Sequence[Labels]) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 (exact chunk match)."""
    hits = n_gold = n_pred = 0
    for gs, ps in zip(gold, pred, strict=True):
        if len(gs) != len(ps):
            raise ValueError(f"gold has {len(gs)} labels, predictions {len(ps)}")
        gold_chunks, pred_chunks = entities(gs), entities(ps)
        hits += len(gold_chunks & pred_chunks)
        n_gold += len(gold_chunks)
        n_pred += len(pred_chunks)
    precision, recall = _ratio(hits, n_pred), _ratio(hits, n_gold)
    return {
        "entity_precision": precision,
        "entity_recall": recall,
        "entity_f1": _f1(precision, recall)
    }

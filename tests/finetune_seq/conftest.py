"""Tokenizers trained on the Spanish pair fixture's own text, one per family."""

import os

import pytest

from flaxlm.data.tokenizers import train_tokenizer

FIXTURE = os.path.join(os.path.dirname(__file__), "pairs_es")
TRAIN_TSV, DEV_TSV, TEST_TSV = (os.path.join(FIXTURE, f"{s}.tsv") for s in ("train", "dev", "test"))


@pytest.fixture(scope="session")
def pair_text(tmp_path_factory):
    """Every paragraph of the fixture, one per line (what the tokenizers train on)."""
    lines = []
    for path in (TRAIN_TSV, DEV_TSV, TEST_TSV):
        with open(path, encoding="utf-8") as f:
            lines += [p for line in f.read().splitlines()[1:] for p in line.split("\t")[:2]]
    path = tmp_path_factory.mktemp("pair_text") / "es.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def _train(kind, pair_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / kind
    return train_tokenizer([pair_text], vocab_size=800, kind=kind, out_dir=str(out))


@pytest.fixture(scope="session")
def es_unigram(pair_text, tmp_path_factory):
    return _train("unigram", pair_text, tmp_path_factory)


@pytest.fixture(scope="session")
def es_wordpiece(pair_text, tmp_path_factory):
    return _train("wordpiece", pair_text, tmp_path_factory)


@pytest.fixture(scope="session", params=["unigram", "wordpiece"])
def es_tokenizer(request):
    return request.getfixturevalue(f"es_{request.param}")

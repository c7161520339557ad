"""Small tokenizers trained once per session on a slice of the Italian sample corpus."""

import pytest

from flaxlm.data.tokenizers import train_tokenizer
from tests.conftest import IT_EVAL, IT_TRAIN

# ~250 kB of the corpus: enough for a 2k vocabulary, and trains in well under a second.
SLICE_LINES = 1500
VOCAB_SIZE = 2000


@pytest.fixture(scope="session")
def it_slice(tmp_path_factory):
    with open(IT_TRAIN, encoding="utf-8") as f:
        lines = f.read().split("\n")[:SLICE_LINES]
    path = tmp_path_factory.mktemp("corpus") / "it_slice.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def sp_tokenizer(it_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "unigram"
    return train_tokenizer([it_slice], vocab_size=VOCAB_SIZE, kind="unigram", out_dir=str(out))


@pytest.fixture(scope="session")
def wp_tokenizer(it_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "wordpiece"
    return train_tokenizer([it_slice], vocab_size=VOCAB_SIZE, kind="wordpiece", out_dir=str(out))


@pytest.fixture(scope="session", params=["unigram", "wordpiece"])
def tokenizer(request):
    return request.getfixturevalue("sp_tokenizer" if request.param == "unigram" else "wp_tokenizer")


@pytest.fixture(scope="session")
def eval_sentences():
    """Real paragraphs the tokenizers were not trained on."""
    with open(IT_EVAL, encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line.strip()][:40]

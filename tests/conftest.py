"""Shared test setup: 8 fake CPU devices so sharding is real, and quiet TensorFlow."""

import os

# Must be set before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# With the optional libtpu installed, JAX would otherwise probe for TPU chips at start-up.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IT_TRAIN = os.path.join(REPO, "data", "it", "train.txt")
IT_EVAL = os.path.join(REPO, "data", "it", "eval.txt")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def it_small_corpus(tmp_path_factory):
    """The first 2,000 lines of the Italian sample: quick to tokenize in every subprocess."""
    with open(IT_TRAIN, encoding="utf-8") as f:
        lines = f.read().split("\n")[:2000]
    corpus = tmp_path_factory.mktemp("small_corpus") / "it.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    return str(corpus)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, it_small_corpus):
    """A 2k unigram tokenizer trained on the small Italian corpus (what train tests use)."""
    from flaxlm.data.tokenizers import train_tokenizer
    out = tmp_path_factory.mktemp("tiny_tok") / "unigram"
    train_tokenizer([it_small_corpus], vocab_size=2000, kind="unigram", out_dir=str(out))
    return str(out)

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
def tiny_tokenizer_dir(tmp_path_factory):
    """A 2k unigram tokenizer trained on a slice of the Italian sample (what train tests use)."""
    from flaxlm.data.tokenizers import train_tokenizer
    with open(IT_TRAIN, encoding="utf-8") as f:
        lines = f.read().split("\n")[:1500]
    corpus = tmp_path_factory.mktemp("tiny_corpus") / "it.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    out = tmp_path_factory.mktemp("tiny_tok") / "unigram"
    train_tokenizer([str(corpus)], vocab_size=2000, kind="unigram", out_dir=str(out))
    return str(out)

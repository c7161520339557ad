"""A multilingual model to prune: a SentencePiece vocabulary trained on the shipped Italian and
Spanish text together, and a random transformers XLMRobertaForMaskedLM on it."""

from __future__ import annotations

import itertools
import os

import pytest

from tests.conftest import REPO

# The samples shipped in the repository (data/*/PROVENANCE.md), so a clean clone runs these alone.
IT_CORPUS = os.path.join(REPO, "data", "it", "train.txt")
ES_CORPUS = os.path.join(REPO, "data", "es", "train.txt")


def write_it_es_sample(path, lines_per_language: int) -> str:
    with open(path, "w", encoding="utf-8") as out:
        for source in (IT_CORPUS, ES_CORPUS):
            with open(source, encoding="utf-8") as f:
                out.write("".join(itertools.islice(f, lines_per_language)).rstrip("\n") + "\n\n")
    return str(path)


@pytest.fixture(scope="session")
def it_es_tokenizer(tmp_path_factory) -> str:
    from flaxlm.data.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("it_es")
    corpus = write_it_es_sample(root / "it_es.txt", 1200)
    out = root / "sp"
    train_tokenizer([corpus], vocab_size=1000, kind="unigram", out_dir=str(out))
    return str(out)


@pytest.fixture(scope="session")
def hf_xlmr(tmp_path_factory, it_es_tokenizer) -> str:
    """A random 2-layer XLMRobertaForMaskedLM (hidden 32) with the it+es tokenizer's files."""
    from tests.convert.conftest import make_hf_dir

    path = tmp_path_factory.mktemp("hf_xlmr") / "model"
    make_hf_dir(path, "xlmr", it_es_tokenizer, hidden=32, heads=2, intermediate=64, type_vocab=1,
                max_pos=66)
    return str(path)


@pytest.fixture(scope="session")
def xlmr_workdir(tmp_path_factory, it_es_tokenizer) -> str:
    """A flaxlm workdir of a random 2-layer XLM-R (hidden 32) on the it+es tokenizer (the slow
    chain test imports one from transformers instead)."""
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.models.config import preset
    from tests.convert.conftest import write_workdir

    config = preset("tiny", vocab_size=load_tokenizer(it_es_tokenizer).vocab_size, hidden_size=32,
                    num_heads=2, intermediate_size=64, max_position_embeddings=66)
    out = tmp_path_factory.mktemp("workdir") / "run"
    write_workdir(out, it_es_tokenizer, config, steps=(0, ))
    return str(out)


def prune(source: str, out, **options) -> dict:
    """Prunes `source` for Italian at 5% (0.1% of the 394 training documents would keep every
    token seen at all), held-out text: the Italian eval split."""
    from flaxlm.vocab.prune import PruneOptions, prune_vocab
    from tests.conftest import IT_EVAL, IT_TRAIN

    return prune_vocab(source, str(out), corpus=[IT_TRAIN], heldout=[IT_EVAL],
                       options=PruneOptions(**{
                           "min_doc_freq": 0.05,
                           **options
                       }))


@pytest.fixture(scope="session")
def pruned_cased(tmp_path_factory, xlmr_workdir) -> str:
    out = tmp_path_factory.mktemp("pruned") / "cased"
    prune(xlmr_workdir, out)
    return str(out)


@pytest.fixture(scope="session")
def pruned_uncased(tmp_path_factory, xlmr_workdir) -> str:
    out = tmp_path_factory.mktemp("pruned") / "uncased"
    prune(xlmr_workdir, out, uncase=True)
    return str(out)

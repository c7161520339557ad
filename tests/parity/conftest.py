"""A small WordPiece tokenizer and flaxlm's own MLM batches (its masks, positions and labels),
which both sides of a parity test read."""

import itertools

import numpy as np
import pytest

from tests.conftest import IT_TRAIN

SEQ_LEN, ROWS = 32, 4


@pytest.fixture(scope="session")
def wp_tokenizer_dir(tmp_path_factory) -> str:
    from flaxlm.data.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("parity_tok")
    corpus = root / "corpus.txt"
    with open(IT_TRAIN, encoding="utf-8") as f:
        corpus.write_text("".join(itertools.islice(f, 600)), encoding="utf-8")
    train_tokenizer([str(corpus)], vocab_size=200, kind="wordpiece", out_dir=str(root / "wp"),
                    lowercase=False, strip_accents=False)
    return str(root / "wp")


def _flaxlm_batch(tokenizer_dir, corpus_dir, two_segment_rate: float) -> dict[str, np.ndarray]:
    from flaxlm.data import pipeline
    from flaxlm.data.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    corpus = corpus_dir / "it.txt"
    with open(IT_TRAIN, encoding="utf-8") as f:
        corpus.write_text("".join(itertools.islice(f, 600, 640)), encoding="utf-8")
    cfg = pipeline.DataConfig(train_files=(str(corpus), ), seq_len=SEQ_LEN,
                              two_segment_rate=two_segment_rate)
    batch = {
        k: np.array(v)
        for k, v in next(pipeline.build_train_stream(cfg, tok, seed=3,
                                                     host_batch_size=ROWS)).items()
    }
    # Padding in the last row: cut it after 20 tokens ([SEP] last), and drop its slots past that.
    real = 20
    batch["input_ids"][-1, real - 1] = tok.sep_id
    batch["input_ids"][-1, real:] = tok.pad_id
    batch["attention_mask"][-1, real:] = 0
    batch["token_type_ids"][-1, real:] = 0
    outside = batch["masked_positions"][-1] >= real - 1
    for key in ("masked_positions", "masked_labels"):
        batch[key][-1, outside] = 0
    batch["masked_weights"][-1, outside] = 0.0
    assert batch["masked_weights"].sum() >= 8 and (batch["input_ids"] == tok.mask_id).any()
    return batch


@pytest.fixture(scope="session")
def mlm_batch(wp_tokenizer_dir, tmp_path_factory) -> dict[str, np.ndarray]:
    """One batch from flaxlm's pipeline: packed rows, whole-word masks, 80/10/10 replacements,
    one segment (token type 0); the last row is cut short, so padding takes part."""
    return _flaxlm_batch(wp_tokenizer_dir, tmp_path_factory.mktemp("parity_corpus"), 0.0)


@pytest.fixture(scope="session")
def two_segment_batch(wp_tokenizer_dir, tmp_path_factory) -> dict[str, np.ndarray]:
    """The same with ELECTRA's share of two-segment rows (token type 1 in the second)."""
    batch = _flaxlm_batch(wp_tokenizer_dir, tmp_path_factory.mktemp("parity_corpus2"), 0.9)
    assert batch["token_type_ids"].any()
    return batch

"""Property tests: whatever bytes a corpus holds, reading → tokenizing → packing → masking
never crashes and every batch keeps the contract."""

import os
import tempfile
import warnings

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flaxlm.data import corpus_files, pipeline
from flaxlm.errors import FlaxlmError

SEQ_LEN = 24

_line = st.one_of(
    st.text(max_size=60).map(str.encode),  # any Unicode, control characters and NUL included
    st.binary(max_size=60),  # invalid UTF-8
    st.sampled_from([b"", b"a", b"\x00", b"\xff",
                     "è".encode()]),  # blank, one token, lone bad bytes
    st.integers(500, 5_000).map(lambda n: b"parola" * n),  # one very long word
    st.integers(200, 2_000).map(lambda n: "città ".encode() * n),  # a very long paragraph
)
_corpus = st.lists(_line, min_size=1, max_size=12).map(b"\n".join)

# First bytes that make a file another format (Parquet, gzip, zstd, a PNG image, ...).
_MAGIC_NUMBERS = (corpus_files._PARQUET_MAGIC, *corpus_files._COMPRESSION_MAGIC,
                  *corpus_files._OTHER_MAGIC)


def _eval_batches(corpus: bytes, tokenizer, **cfg):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.txt")
        with open(path, "wb") as f:
            f.write(corpus)
        config = pipeline.DataConfig(train_files=(path, ), eval_files=(path, ), seq_len=SEQ_LEN,
                                     **cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return pipeline.build_eval_batches(config, tokenizer, host_batch_size=3)
            except FlaxlmError as e:
                assert path in str(e)  # every refusal names the file
                if corpus.startswith(_MAGIC_NUMBERS):
                    return "binary"  # read as the format its first bytes name, or refused as it
                if "not a corpus file (binary data" in str(e):
                    # Refused as binary only when most of it is NUL or invalid UTF-8.
                    good = corpus.decode("utf-8", errors="ignore").replace("\x00", "")
                    assert len(corpus) - len(good.encode()) > 0.3 * len(corpus)
                    return "binary"
                return None  # "no text/tokens": checked by the caller


@settings(max_examples=20, deadline=None)
@given(corpus=_corpus, max_predictions=st.sampled_from([0, 1, 3]))
@example(corpus=b"\x89PNG", max_predictions=0)  # a PNG's first bytes: refused as an image
def test_any_corpus_gives_contract_batches(tokenizer, corpus, max_predictions):
    batches = _eval_batches(corpus, tokenizer, max_predictions=max_predictions)
    if batches == "binary":
        return
    if batches is None:
        # Refused only when no line has a token (blank, or only characters a normalizer drops).
        lines = corpus.decode("utf-8", errors="replace").replace("\x00", "").split("\n")
        assert not any(ids.size
                       for ids, _ in tokenizer.encode_batch([line.strip() for line in lines]))
        return
    m = pipeline.max_predictions(
        pipeline.DataConfig(train_files=("x", ), seq_len=SEQ_LEN, max_predictions=max_predictions))
    for batch in batches:
        ids, positions, weights = (
            batch["input_ids"],
            batch["masked_positions"],
            batch["masked_weights"],
        )
        assert ids.shape == (3, SEQ_LEN) and positions.shape == weights.shape == (3, m)
        assert ((ids >= 0) & (ids < tokenizer.vocab_size)).all()
        original = ids.copy()
        rows, slots = np.nonzero(weights)
        original[rows, positions[rows, slots]] = batch["masked_labels"][rows, slots]
        # Labels only at predicted positions, which are never special tokens or padding.
        assert not np.isin(batch["masked_labels"][rows, slots], tokenizer.special_ids).any()
        assert (batch["masked_labels"][weights == 0] == 0).all() and (positions[weights == 0]
                                                                      == 0).all()
        predicted = np.zeros(ids.shape, bool)
        predicted[rows, positions[rows, slots]] = True
        assert predicted.sum() == len(rows)  # no position predicted twice
        np.testing.assert_array_equal(ids[~predicted], original[~predicted])
        assert (original[:, 0] == tokenizer.cls_id).all()
        np.testing.assert_array_equal(batch["attention_mask"], original != tokenizer.pad_id)


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=200), max_size=8))
def test_encode_batch_any_unicode(tokenizer, texts):
    out = tokenizer.encode_batch(texts)
    assert len(out) == len(texts)
    for ids, starts in out:
        assert ids.dtype == np.int32 and starts.shape == ids.shape
        assert ((ids >= 0) & (ids < tokenizer.vocab_size)).all()
        assert tokenizer.mask_id not in ids and tokenizer.pad_id not in ids
        assert starts[:1].all()

import json
import os

import numpy as np
import pytest

from flaxlm.data import pipeline, prepare, sources
from flaxlm.errors import FlaxlmError
from tests.conftest import IT_EVAL

CLS, SEP, PAD = 100, 101, 0


def _doc(ids, starts):
    return np.array(ids, np.int32), np.array(starts, bool)


def test_packing_joins_documents_with_sep_and_frames_cls_sep():
    docs = [
        _doc([1, 2, 3], [1, 0, 1]),
        _doc([], []),
        _doc([4, 5, 6, 7, 8], [1, 1, 0, 0, 1]),
        _doc([9], [1]),
    ]
    (block, ) = prepare.pack_examples(iter(docs), seq_len=6, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    ids_NxL, ws_NxL = block
    np.testing.assert_array_equal(
        ids_NxL,
        [[CLS, 1, 2, 3, SEP, SEP], [CLS, 4, 5, 6, 7, SEP], [CLS, 8, SEP, 9, SEP, PAD]],
    )
    # Separators never start a word; CLS, SEP and padding carry no word start.
    np.testing.assert_array_equal(
        ws_NxL.astype(int),
        [[0, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0], [0, 1, 0, 1, 0, 0]],
    )


def test_chunk_head_inside_a_word_becomes_a_word_start():
    docs = [_doc([1, 2, 3, 4, 5], [1, 0, 0, 0, 0])]
    (block, ) = prepare.pack_examples(iter(docs), seq_len=5, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    np.testing.assert_array_equal(block[1][:, 1], [True, True])


def test_streaming_blocks_equal_one_big_block():
    rng = np.random.default_rng(0)
    docs = [_doc(rng.integers(1, 50, n), rng.random(n) < 0.5) for n in rng.integers(0, 40, 60)]
    one = list(prepare.pack_examples(iter(docs), seq_len=10, cls_id=CLS, sep_id=SEP, pad_id=PAD))
    many = list(
        prepare.pack_examples(iter(docs), seq_len=10, cls_id=CLS, sep_id=SEP, pad_id=PAD,
                              examples_per_block=3))
    assert len(one) == 1 and len(many) > 5
    for i in (0, 1):
        np.testing.assert_array_equal(one[0][i], np.concatenate([b[i] for b in many]))


def test_prepared_shards_round_trip_and_feed_the_same_stream(sp_tokenizer, tmp_path):
    out = str(tmp_path / "prepared")
    meta = prepare.prepare_shards([IT_EVAL], sp_tokenizer, out, seq_len=64, num_shards=3)
    assert meta["files"] == [f"shard-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert json.load(open(os.path.join(out, "prepared.json"))) == meta
    assert meta["seq_len"] == 64 and meta["vocab_size"] == sp_tokenizer.vocab_size
    ids_NxL, ws_NxL = prepare.pack_corpus([IT_EVAL], sp_tokenizer, seq_len=64)
    assert (sum(meta["num_examples"]) == len(ids_NxL)
            and max(meta["num_examples"]) - min(meta["num_examples"]) <= 1)
    loaded = sources.load_prepared([out], seq_len=64, vocab_size=sp_tokenizer.vocab_size)
    np.testing.assert_array_equal(loaded[0], ids_NxL)
    np.testing.assert_array_equal(loaded[1], ws_NxL)

    def first_batches(files):
        cfg = pipeline.DataConfig(train_files=files, seq_len=64)
        stream = pipeline.build_train_stream(cfg, sp_tokenizer, seed=3, host_batch_size=4)
        return [next(stream) for _ in range(3)]

    for a, b in zip(first_batches((out, )), first_batches((IT_EVAL, ))):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_prepared_shards_are_checked_against_the_config(sp_tokenizer, tmp_path):
    out = str(tmp_path / "p")
    prepare.prepare_shards([IT_EVAL], sp_tokenizer, out, seq_len=32, num_shards=1)
    with pytest.raises(FlaxlmError, match="seq_len=32"):
        sources.load_prepared([out], seq_len=64, vocab_size=sp_tokenizer.vocab_size)
    with pytest.raises(FlaxlmError, match="raw text"):
        pipeline.build_train_stream(
            pipeline.DataConfig(train_files=(out, IT_EVAL), seq_len=32),
            sp_tokenizer,
            seed=0,
            host_batch_size=2,
        )
    os.remove(os.path.join(out, "shard-00000-of-00001.tfrecord"))
    with pytest.raises(FlaxlmError, match="shard-00000-of-00001.tfrecord"):
        sources.load_prepared([out], seq_len=32, vocab_size=sp_tokenizer.vocab_size)


def test_prepare_rejects_an_empty_corpus(sp_tokenizer, tmp_path):
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(FlaxlmError, match="blank.txt"):
        prepare.prepare_shards(
            [str(tmp_path / "blank.txt")],
            sp_tokenizer,
            str(tmp_path / "o"),
            seq_len=32,
            num_shards=2,
        )
    assert not os.path.exists(tmp_path / "o" / "prepared.json")

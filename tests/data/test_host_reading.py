"""`data.host_reading = "own_units"`: two hosts (process 0 and 1 of 2, called directly) read
disjoint units of a corpus of small files made here, each stream resumes exactly, and a corpus
with fewer units than hosts is refused."""

import dataclasses
import itertools

import numpy as np
import pytest

from flaxlm.data import host_reading, pipeline, prepare, sources
from flaxlm.errors import FlaxlmError
from tests.conftest import IT_TRAIN
from tests.data.test_corpus_files import write_jsonl, write_parquet, write_text
from tests.data.test_pipeline import _assert_batches_equal, _take, _unmasked

SEQ_LEN = 32
HOSTS = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three files and a Parquet file of 4 row groups: 7 units."""
    docs = list(sources.iter_documents([IT_TRAIN]))[:48]
    root = tmp_path_factory.mktemp("host_corpus")
    files = (write_text(root / "a.txt", docs[:6]), write_jsonl(root / "b.jsonl.gz", docs[6:12]),
             write_text(root / "c.txt",
                        docs[12:20]), write_parquet(root / "d.parquet", docs[20:],
                                                    row_group_size=7))
    return files, docs


def _cfg(files, **kw):
    return pipeline.DataConfig(train_files=tuple(files), seq_len=SEQ_LEN,
                               host_reading=host_reading.OWN_UNITS, **kw)


def _stream(cfg, tokenizer, p, batch, start=0, hosts=HOSTS, seed=3):
    return pipeline.build_train_stream(cfg, tokenizer, seed=seed, host_batch_size=batch,
                                       start_example=start, process_index=p, process_count=hosts)


def _rows_of(ids_NxL):
    return {tuple(row) for row in ids_NxL}


def _rows(batches):
    return {row for b in batches for row in _rows_of(_unmasked(b))}


def test_two_hosts_read_disjoint_units_that_together_are_the_corpus(corpus, sp_tokenizer):
    files, docs = corpus
    assert host_reading.count_units(files) == 7
    per_host = [list(sources.iter_documents(files, shard=(p, HOSTS))) for p in range(HOSTS)]
    # Units in listing order: a.txt, b.jsonl.gz, c.txt, then d.parquet's row groups 0..3.
    units = [docs[:6], docs[6:12], docs[12:20]] + [docs[20 + 7 * g:27 + 7 * g] for g in range(4)]
    for p in range(HOSTS):
        assert per_host[p] == [d for u, unit in enumerate(units) if u % HOSTS == p for d in unit]
    assert sorted(map(tuple, per_host[0] + per_host[1])) == sorted(map(tuple, docs))

    # Each host's stream holds exactly the packed examples of its own units: one epoch of it is
    # a permutation of their table (its own units' rows, not the corpus's).
    cfg = _cfg(files)
    whole_NxL, _ = prepare.pack_corpus(files, sp_tokenizer, seq_len=SEQ_LEN)
    for p in range(HOSTS):
        own_NxL, _ = prepare.pack_corpus(files, sp_tokenizer, seq_len=SEQ_LEN, shard=(p, HOSTS))
        assert len(own_NxL) < len(whole_NxL)
        (epoch, ) = _take(_stream(cfg, sp_tokenizer, p, batch=len(own_NxL)), 1)
        assert sorted(map(tuple, _unmasked(epoch))) == sorted(map(tuple, own_NxL))


def test_each_host_resumes_its_own_stream_exactly(corpus, sp_tokenizer):
    cfg, B, k = _cfg(corpus[0]), 4, 5
    G = B * HOSTS
    for p in range(HOSTS):
        full = _take(_stream(cfg, sp_tokenizer, p, B), k + 6)
        _assert_batches_equal(_take(_stream(cfg, sp_tokenizer, p, B, start=k * G), 6), full[k:])
        # Another batch size resumes at the same example of each host's stream (k·B of its own).
        halves = _take(_stream(cfg, sp_tokenizer, p, B // 2, start=k * G), 4)
        _assert_batches_equal([{
            key: np.concatenate([a[key], b[key]])
            for key in a
        } for a, b in zip(halves[::2], halves[1::2])], full[k:k + 2])
    # The hosts' examples differ.
    firsts = [_take(_stream(cfg, sp_tokenizer, p, B), 3) for p in range(HOSTS)]
    assert not _rows(firsts[0]) & _rows(firsts[1])
    with pytest.raises(FlaxlmError, match="not a multiple of the 2 hosts"):
        next(_stream(cfg, sp_tokenizer, 0, B, start=k * G + 1))


def test_one_host_reading_its_own_units_is_the_all_stream(corpus, sp_tokenizer):
    own = _cfg(corpus[0])
    every = dataclasses.replace(own, host_reading=host_reading.ALL)
    _assert_batches_equal(_take(_stream(own, sp_tokenizer, 0, 4, start=12, hosts=1), 5),
                          _take(_stream(every, sp_tokenizer, 0, 4, start=12, hosts=1), 5))


@pytest.mark.parametrize("streamed", [False, True])
def test_hosts_read_their_own_prepared_shards(corpus, sp_tokenizer, tmp_path, monkeypatch,
                                              streamed):
    out = str(tmp_path / "prepared")
    meta = prepare.prepare_shards(corpus[0], sp_tokenizer, out, seq_len=SEQ_LEN, num_shards=3)
    if streamed:  # past the in-memory budget: read through a shuffle buffer
        monkeypatch.setattr(pipeline, "IN_MEMORY_MAX_TOKENS", 0)
    cfg, B = _cfg([out], shuffle_buffer=16), 4
    # Files 0 and 2 to host 0, file 1 to host 1.
    for p, files in ((0, [0, 2]), (1, [1])):
        own_NxL, _ = sources.load_prepared([out], seq_len=SEQ_LEN,
                                           vocab_size=sp_tokenizer.vocab_size, shard=(p, HOSTS))
        assert len(own_NxL) == sum(meta["num_examples"][f] for f in files)
        steps = -(-len(own_NxL) // B)
        rows, own = _rows(_take(_stream(cfg, sp_tokenizer, p, B), steps)), _rows_of(own_NxL)
        # In memory the first epoch is a permutation of the host's rows; streamed, the shuffle
        # buffer mixes in the next epoch's, all of them the host's own.
        assert rows == own if not streamed else rows <= own
        full = _take(_stream(cfg, sp_tokenizer, p, B), 8)
        _assert_batches_equal(_take(_stream(cfg, sp_tokenizer, p, B, start=5 * B * HOSTS), 3),
                              full[5:])


def test_fewer_units_than_hosts_is_refused_saying_how_to_get_more(corpus, sp_tokenizer):
    files = corpus[0]
    one_file = _cfg(files[:1])
    for refused in (lambda: host_reading.plan(host_reading.OWN_UNITS, files[:1], HOSTS),
                    lambda: _stream(one_file, sp_tokenizer, 1, 4)):
        with pytest.raises(FlaxlmError) as e:
            refused()
        line = str(e.value)
        assert "\n" not in line and "1 unit(s) for 2 hosts" in line
        assert "smaller row groups" in line and "--num-shards" in line
    # The Parquet file alone has 4 row groups: enough for 4 hosts, not for 5.
    assert host_reading.plan(host_reading.OWN_UNITS, files[3:], 4)[0] == {
        "host_reading": "own_units on 4 hosts"
    }
    with pytest.raises(FlaxlmError, match="4 unit"):
        host_reading.plan(host_reading.OWN_UNITS, files[3:], 5)
    assert host_reading.plan(host_reading.ALL, files[:1], HOSTS) == ({}, ())
    with pytest.raises(FlaxlmError, match="data.host_reading='some'"):
        pipeline.DataConfig(train_files=tuple(files), host_reading="some")

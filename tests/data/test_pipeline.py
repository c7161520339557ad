import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from flaxlm.data import pipeline, prepare
from flaxlm.errors import FlaxlmError
from tests.conftest import IT_EVAL

SEQ_LEN = 64
CFG = pipeline.DataConfig(train_files=(IT_EVAL, ), eval_files=(IT_EVAL, ), seq_len=SEQ_LEN)
CONTRACT = {
    "input_ids": np.int32,
    "attention_mask": np.int32,
    "token_type_ids": np.int32,
    "masked_positions": np.int32,
    "masked_labels": np.int32,
    "masked_weights": np.float32,
}


def _take(stream, n):
    return list(itertools.islice(stream, n))


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _concat_hosts(per_host):
    return [{
        k: np.concatenate([h[i][k] for h in per_host])
        for k in per_host[0][i]
    } for i in range(len(per_host[0]))]


def _unmasked(batch):
    """Original ids: the labels written back at the predicted positions."""
    ids = batch["input_ids"].copy()
    rows, slots = np.nonzero(batch["masked_weights"])
    ids[rows, batch["masked_positions"][rows, slots]] = batch["masked_labels"][rows, slots]
    return ids


def test_batches_follow_the_contract(sp_tokenizer):
    m = pipeline.max_predictions(CFG)
    (batch, ) = _take(pipeline.build_train_stream(CFG, sp_tokenizer, seed=0, host_batch_size=4), 1)
    for key, dtype in CONTRACT.items():
        assert batch[key].dtype == dtype
        assert batch[key].shape == ((4, SEQ_LEN) if key in ("input_ids", "attention_mask",
                                                            "token_type_ids") else (4, m))
    ids = _unmasked(batch)
    assert (ids[:, 0] == sp_tokenizer.cls_id).all()
    np.testing.assert_array_equal(batch["attention_mask"], ids != sp_tokenizer.pad_id)


def test_each_epoch_is_a_permutation_of_the_packed_examples(wp_tokenizer):
    table, _ = prepare.pack_corpus([IT_EVAL], wp_tokenizer, seq_len=SEQ_LEN)
    n = len(table)
    batches = _take(pipeline.build_train_stream(CFG, wp_tokenizer, seed=5, host_batch_size=n), 2)
    epochs = [_unmasked(b) for b in batches]
    for seen in epochs:
        np.testing.assert_array_equal(seen[np.lexsort(seen.T[::-1])],
                                      table[np.lexsort(table.T[::-1])])
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled


def test_resuming_at_batch_k_continues_the_same_stream(sp_tokenizer):
    # 8 × 40 = 320 examples pass the end of the ~180-example first epoch.
    full = _take(pipeline.build_train_stream(CFG, sp_tokenizer, seed=7, host_batch_size=8), 40)
    resumed = _take(
        pipeline.build_train_stream(CFG, sp_tokenizer, seed=7, host_batch_size=8,
                                    start_example=33 * 8), 7)
    _assert_batches_equal(full[33:], resumed)
    other = _take(pipeline.build_train_stream(CFG, sp_tokenizer, seed=8, host_batch_size=8), 1)
    assert not np.array_equal(other[0]["input_ids"], full[0]["input_ids"])


def test_resuming_with_another_batch_size_continues_at_the_same_example(sp_tokenizer):
    # 10 batches of 6 are the first 60 examples; a resumed run with batches of 4 starts at 60.
    sixes = _take(pipeline.build_train_stream(CFG, sp_tokenizer, seed=3, host_batch_size=6), 12)
    fours = _take(
        pipeline.build_train_stream(CFG, sp_tokenizer, seed=3, host_batch_size=4, start_example=60),
        3)
    rows = lambda batches, key: np.concatenate([b[key] for b in batches])  # noqa: E731
    for key in ("input_ids", "masked_positions", "masked_labels"):
        np.testing.assert_array_equal(rows(fours, key), rows(sixes[10:], key))


@pytest.mark.parametrize("start", [0, 5])
def test_host_slices_concatenate_to_the_single_host_batch(sp_tokenizer, start):
    one = _take(
        pipeline.build_train_stream(CFG, sp_tokenizer, seed=1, host_batch_size=6,
                                    start_example=start * 6),
        3,
    )
    hosts = [
        _take(
            pipeline.build_train_stream(
                CFG,
                sp_tokenizer,
                seed=1,
                host_batch_size=3,
                start_example=start * 6,
                process_index=p,
                process_count=2,
            ),
            3,
        ) for p in range(2)
    ]
    _assert_batches_equal(one, _concat_hosts(hosts))


def test_eval_batches_are_fixed_padded_and_sliced(sp_tokenizer):
    n = len(prepare.pack_corpus([IT_EVAL], sp_tokenizer, seq_len=SEQ_LEN)[0])
    b = next(b for b in (16, 14, 12, 10) if n % b)  # so that the last batch needs filler rows
    one = pipeline.build_eval_batches(CFG, sp_tokenizer, host_batch_size=b)
    _assert_batches_equal(one, pipeline.build_eval_batches(CFG, sp_tokenizer, host_batch_size=b))
    assert len(one) == -(-n // b)
    real_rows = (np.concatenate([x["masked_weights"] for x in one]).sum(axis=1) > 0).sum()
    assert real_rows == n and one[-1]["input_ids"].shape[0] == b
    filler = one[-1]["input_ids"][-1]
    assert (filler[:2].tolist() == [sp_tokenizer.cls_id, sp_tokenizer.sep_id]
            and not one[-1]["masked_weights"][-1].any())
    hosts = [
        pipeline.build_eval_batches(CFG, sp_tokenizer, host_batch_size=b // 2, process_index=p,
                                    process_count=2) for p in range(2)
    ]
    assert len(hosts[0]) == len(hosts[1]) == len(one)
    _assert_batches_equal(one, _concat_hosts(hosts))
    assert (pipeline.build_eval_batches(pipeline.DataConfig(train_files=(IT_EVAL, )), sp_tokenizer,
                                        host_batch_size=4) == [])


def _wiki(num):
    with open(IT_EVAL, encoding="utf-8") as f:
        articles = [doc.strip() for doc in f.read().split("\n\n") if doc.strip()][:num]

    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({
            "text": articles,
            "title": ["t"] * len(articles)
        })

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_tfds_stream_resumes_by_skipping_and_slices_hosts(sp_tokenizer):
    cfg = pipeline.DataConfig(train_files=("tfds:wikipedia/20230601.it:train", ), seq_len=SEQ_LEN,
                              shuffle_buffer=50)
    with _wiki(5):
        full = _take(pipeline.build_train_stream(cfg, sp_tokenizer, seed=2, host_batch_size=4), 12)
        resumed = _take(
            pipeline.build_train_stream(cfg, sp_tokenizer, seed=2, host_batch_size=4,
                                        start_example=9 * 4),
            3,
        )
        hosts = [
            _take(
                pipeline.build_train_stream(cfg, sp_tokenizer, seed=2, host_batch_size=2,
                                            process_index=p, process_count=2),
                4,
            ) for p in range(2)
        ]
    _assert_batches_equal(full[9:], resumed)
    _assert_batches_equal(full[:4], _concat_hosts(hosts))
    assert full[0]["input_ids"].shape == (4, SEQ_LEN)


def test_large_prepared_shards_are_streamed(sp_tokenizer, tmp_path, monkeypatch):
    prepare.prepare_shards([IT_EVAL], sp_tokenizer, str(tmp_path), seq_len=SEQ_LEN, num_shards=2)
    monkeypatch.setattr(pipeline, "IN_MEMORY_MAX_TOKENS", 0)
    cfg = pipeline.DataConfig(train_files=(str(tmp_path), ), seq_len=SEQ_LEN, shuffle_buffer=64)
    full = _take(pipeline.build_train_stream(cfg, sp_tokenizer, seed=0, host_batch_size=8), 30)
    resumed = _take(
        pipeline.build_train_stream(cfg, sp_tokenizer, seed=0, host_batch_size=8,
                                    start_example=27 * 8), 3)
    _assert_batches_equal(full[27:], resumed)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({
            "train_files": "a.txt"
        }, "train_files"),
        ({
            "seq_len": 4
        }, "seq_len"),
        ({
            "mask_rate": 0.0
        }, "mask_rate"),
        ({
            "mask_token_rate": 0.9,
            "random_token_rate": 0.2
        }, "random_token_rate"),
        ({
            "max_predictions": 999
        }, "max_predictions"),
        ({
            "shuffle_buffer": 0
        }, "shuffle_buffer"),
    ],
)
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(FlaxlmError, match=key):
        pipeline.DataConfig(**{"train_files": (IT_EVAL, ), **overrides})


def test_bad_inputs_raise_before_streaming(sp_tokenizer, tmp_path):
    (tmp_path / "blank.txt").write_text("\n \n")
    for files, match in [
        ((), "train_files"),
        ((str(tmp_path / "nope.txt"), ), "nope.txt"),
        ((str(tmp_path / "blank.txt"), ), "blank.txt"),
    ]:
        with pytest.raises(FlaxlmError, match=match):
            pipeline.build_train_stream(pipeline.DataConfig(train_files=files), sp_tokenizer,
                                        seed=0, host_batch_size=2)
    with pytest.raises(FlaxlmError, match="process_index"):
        pipeline.build_train_stream(CFG, sp_tokenizer, seed=0, host_batch_size=2, process_index=2,
                                    process_count=2)

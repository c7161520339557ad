"""Pair encoding equals what the exported tokenizer gives through transformers."""

import numpy as np
import pytest

from flaxlm.convert.tokenizer_files import write_release_tokenizer
from flaxlm.data import pair_batches, pairs
from flaxlm.errors import FlaxlmError
from tests.finetune_seq.conftest import DEV_TSV


@pytest.mark.parametrize("len_a,len_b,room,kept", [(3, 4, 7, (3, 4)), (5, 5, 7, (3, 4)),
                                                   (6, 5, 7, (4, 3)), (2, 9, 7, (2, 5)),
                                                   (9, 2, 7, (5, 2)), (4, 7, 6, (3, 3)),
                                                   (10, 0, 7, (7, 0))])
def test_longest_first_lengths(len_a, len_b, room, kept):
    # The cases were read off BertTokenizerFast(truncation=True, max_length=room + 3).
    assert pair_batches.truncated_lengths(len_a, len_b, room) == kept


@pytest.mark.parametrize("len_a,len_b,room,kept", [(9, 3, 7, (4, 3)), (3, 3, 7, (3, 3))])
def test_only_first_lengths(len_a, len_b, room, kept):
    assert pair_batches.truncated_lengths(len_a, len_b, room, "only_first") == kept


def test_only_first_matches_transformers_and_refuses_an_oversized_second_text(es_unigram, tmp_path):
    hf_tok = write_release_tokenizer(es_unigram, str(tmp_path), 512)
    examples = [
        pairs.Example(e.text + " " + e.text_pair, "Este ejemplo es informática.", "")
        for e in pairs.read_examples(DEV_TSV)[:20]
    ]
    examples = [
        e for e in examples if list(es_unigram.encode_batch([e.text])[0][0]) == hf_tok(
            e.text, add_special_tokens=False)["input_ids"]
    ]
    assert len(examples) >= 10
    encoded = pair_batches.encode(es_unigram, examples, 24, {}, truncation="only_first")
    expected = hf_tok([e.text for e in examples], [e.text_pair for e in examples],
                      truncation="only_first", max_length=24, padding="max_length")
    np.testing.assert_array_equal(encoded.rows["input_ids"], expected["input_ids"])
    assert encoded.truncated == len(examples)
    with pytest.raises(FlaxlmError, match="example 0: its second text alone has"):
        pair_batches.encode(es_unigram, examples[:1], 8, {}, truncation="only_first")


@pytest.mark.parametrize("seq_len", [24, 256])
def test_pairs_and_single_texts_match_transformers(es_tokenizer, tmp_path, seq_len):
    hf_tok = write_release_tokenizer(es_tokenizer, str(tmp_path), 512)
    # The layout is under test, not the segmentation: keep the examples whose segments both
    # tokenizers split alike (the unigram pair disagrees on a few tie-breaks such as "www").
    examples = [
        e for e in pairs.read_examples(DEV_TSV) if all(
            list(es_tokenizer.encode_batch([t])[0][0]) == hf_tok(t, add_special_tokens=False)
            ["input_ids"] for t in (e.text, e.text_pair))
    ]
    assert len(examples) >= 40
    labels = {"different": 0, "same": 1}
    for batch in (examples, [e._replace(text_pair=None) for e in examples]):
        encoded = pair_batches.encode(es_tokenizer, batch, seq_len, labels)
        expected = hf_tok([e.text for e in batch], [e.text_pair
                                                    for e in batch] if batch[0].text_pair else None,
                          truncation=True, max_length=seq_len, padding="max_length",
                          return_token_type_ids=True)
        np.testing.assert_array_equal(encoded.rows["input_ids"], expected["input_ids"])
        np.testing.assert_array_equal(encoded.rows["attention_mask"], expected["attention_mask"])
        np.testing.assert_array_equal(encoded.rows["token_type_ids"], expected["token_type_ids"])
        untruncated = hf_tok([e.text for e in batch],
                             [e.text_pair for e in batch] if batch[0].text_pair else None)
        too_long = sum(len(ids) > seq_len for ids in untruncated["input_ids"])
        assert encoded.truncated == too_long
        assert (encoded.truncated > 0) == (seq_len == 24)
        np.testing.assert_array_equal(encoded.rows["labels"], [labels[e.label] for e in batch])


def test_unknown_labels_and_eval_padding(es_tokenizer):
    examples = pairs.read_examples(DEV_TSV)[:10]
    rows = pair_batches.encode(es_tokenizer, examples, 32, {"same": 0}).rows
    assert (rows["labels"] == np.where([e.label == "same" for e in examples], 0,
                                       pairs.UNKNOWN_LABEL)).all()
    # 10 examples over 2 processes × 4 rows: two global batches, the last with 2 real rows.
    per_process = [
        pair_batches.eval_batches(rows, host_batch_size=4, process_index=p, process_count=2)
        for p in range(2)
    ]
    weights = np.concatenate([
        np.concatenate([b["weights"] for b in per_process[p][k:k + 1]]) for k in range(2)
        for p in range(2)
    ])
    assert weights.tolist() == [1] * 10 + [0] * 6
    ids = np.concatenate([per_process[p][k]["input_ids"] for k in range(2) for p in range(2)])
    np.testing.assert_array_equal(ids[:10], rows["input_ids"])


def test_train_stream_resumes_exactly_and_splits_over_processes(es_tokenizer):
    rows = pair_batches.encode(es_tokenizer, pairs.read_examples(DEV_TSV), 32, {
        "same": 0,
        "different": 1
    }).rows
    n = len(rows["labels"])

    def batches(start, process=0, processes=1, count=6):
        stream = pair_batches.train_stream(rows, seed=3, host_batch_size=10, start_example=start,
                                           process_index=process, process_count=processes)
        return [next(stream)["input_ids"] for _ in range(count)]

    whole = batches(0)
    assert [b.tolist() for b in batches(20, count=4)] == [b.tolist() for b in whole[2:]]
    halves = [batches(0, p, 2, count=3) for p in range(2)]
    for k in range(3):
        np.testing.assert_array_equal(np.concatenate([halves[0][k], halves[1][k]]),
                                      np.concatenate(whole[2 * k:2 * k + 2]))
    # Each epoch is a permutation: the first n examples hold every row once.
    first_epoch = np.concatenate(whole)[:n]
    assert len({r.tobytes() for r in first_epoch}) == len({r.tobytes() for r in rows["input_ids"]})


def test_pairs_without_token_types_match_distilbert_tokenizers(es_wordpiece, tmp_path):
    """A model without token types (DistilBERT) gets the BERT layout with no segment ids, as
    DistilBertTokenizer and the release tokenizer export writes for such a model give it."""
    from transformers import DistilBertTokenizer

    hf_tok = write_release_tokenizer(es_wordpiece, str(tmp_path), 512, token_types=False)
    distil_tok = DistilBertTokenizer.from_pretrained(str(tmp_path))
    examples = [
        e for e in pairs.read_examples(DEV_TSV) if all(
            list(es_wordpiece.encode_batch([t])[0][0]) == hf_tok(t, add_special_tokens=False)
            ["input_ids"] for t in (e.text, e.text_pair))
    ]
    assert len(examples) >= 40
    encoded = pair_batches.encode(es_wordpiece, examples, 24, {}, token_types=False)
    assert not encoded.rows["token_type_ids"].any() and encoded.truncated > 0
    texts, text_pairs = [e.text for e in examples], [e.text_pair for e in examples]
    for tok in (hf_tok, distil_tok):
        expected = tok(texts, text_pairs, truncation=True, max_length=24, padding="max_length")
        assert "token_type_ids" not in expected, type(tok).__name__
        np.testing.assert_array_equal(encoded.rows["input_ids"], expected["input_ids"])
        np.testing.assert_array_equal(encoded.rows["attention_mask"], expected["attention_mask"])
    with_types = pair_batches.encode(es_wordpiece, examples, 24, {})
    np.testing.assert_array_equal(with_types.rows["input_ids"], encoded.rows["input_ids"])
    assert with_types.rows["token_type_ids"].any()

import numpy as np
import pytest
import tensorflow as tf

from flaxlm.data import pipeline, prepare
from tests.conftest import IT_EVAL

SEQ_LEN = 128
SAMPLE = 2000  # × 50–80 words: ≥ 100k words, ~20k predictions; sampling errors ≤ 0.3%


@pytest.fixture(scope="module")
def table(tokenizer):
    return prepare.pack_corpus([IT_EVAL], tokenizer, seq_len=SEQ_LEN)


def _mask(table, tokenizer, g, *, seed=0, **cfg_overrides):
    """Masked features for global indices g (row g mod N of the table), and the originals."""
    ids_NxL, ws_NxL = table
    rows = g % len(ids_NxL)
    cfg = pipeline.DataConfig(train_files=("unused", ), seq_len=SEQ_LEN, **cfg_overrides)
    masker = pipeline.make_masker(cfg, tokenizer, seed)
    ds = (tf.data.Dataset.from_tensor_slices(
        (g, ids_NxL[rows], ws_NxL[rows])).batch(len(g)).map(masker))
    return next(ds.as_numpy_iterator()), ids_NxL[rows], ws_NxL[rows]


def _word_ids(ids_NxL, ws_NxL, tokenizer):
    """Word number per token (numpy reference), -1 for specials and padding."""
    maskable = ~np.isin(ids_NxL, tokenizer.special_ids)
    word = np.cumsum(ws_NxL & maskable, axis=1) - 1
    return np.where(maskable, word, -1)


def _chosen_tokens(out):
    chosen = np.zeros(out["input_ids"].shape, bool)
    rows, slots = np.nonzero(out["masked_weights"])
    chosen[rows, out["masked_positions"][rows, slots]] = True
    return chosen


def test_rates_whole_words_and_80_10_10(table, tokenizer):
    out, orig, ws = _mask(table, tokenizer, np.arange(SAMPLE))
    word = _word_ids(orig, ws, tokenizer)
    chosen = _chosen_tokens(out)
    num_words = word.max(axis=1) + 1
    chosen_words = 0
    for i in range(SAMPLE):
        picked = np.unique(word[i][chosen[i]])
        assert (picked >= 0).all()
        # Whole words: a token is predicted iff its word was picked.
        np.testing.assert_array_equal(chosen[i], np.isin(word[i], picked) & (word[i] >= 0))
        chosen_words += len(picked)
    assert abs(chosen_words / num_words.sum() - 0.15) < 0.01

    labels = out["masked_labels"][out["masked_weights"] > 0]
    inputs = out["input_ids"][chosen]
    np.testing.assert_array_equal(labels, orig[chosen])
    to_mask = np.mean(inputs == tokenizer.mask_id)
    kept = np.mean(inputs == labels)
    assert (abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02
            and abs(1 - to_mask - kept - 0.1) < 0.02)
    randoms = inputs[(inputs != tokenizer.mask_id) & (inputs != labels)]
    assert (not np.isin(randoms, tokenizer.special_ids).any()
            and (randoms < tokenizer.vocab_size).all())
    # Nothing else changes, specials and padding never masked, unused slots are zero.
    np.testing.assert_array_equal(out["input_ids"][~chosen], orig[~chosen])
    assert not np.isin(orig[chosen], tokenizer.special_ids).any()
    unused = out["masked_weights"] == 0
    assert (out["masked_positions"][unused] == 0).all() and (out["masked_labels"][unused]
                                                             == 0).all()
    np.testing.assert_array_equal(out["attention_mask"], (orig
                                                          != tokenizer.pad_id).astype(np.int32))
    assert not out["token_type_ids"].any()


def test_masks_are_fresh_per_epoch_and_fixed_per_seed(table, tokenizer):
    n = len(table[0])
    g = np.arange(n)
    first, _, _ = _mask(table, tokenizer, g, seed=1)
    again, _, _ = _mask(table, tokenizer, g, seed=1)
    next_epoch, _, _ = _mask(table, tokenizer, g + n, seed=1)
    other_seed, _, _ = _mask(table, tokenizer, g, seed=2)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    same_rows = lambda a, b: np.mean(np.all(a["masked_positions"] == b["masked_positions"], axis=1)
                                     )  # noqa: E731
    assert same_rows(first, next_epoch) < 0.05
    assert same_rows(first, other_seed) < 0.05


def test_token_budget_caps_predictions_but_keeps_words_whole(table, tokenizer):
    out, orig, ws = _mask(table, tokenizer, np.arange(300), max_predictions=8)
    assert out["masked_positions"].shape == (300, 8)
    word, chosen = _word_ids(orig, ws, tokenizer), _chosen_tokens(out)
    assert chosen.sum(axis=1).max() <= 8 and chosen.sum(axis=1).min() >= 1
    for i in range(300):
        picked = np.unique(word[i][chosen[i]])
        np.testing.assert_array_equal(chosen[i], np.isin(word[i], picked) & (word[i] >= 0))


def test_derived_budget_rarely_binds(table, tokenizer):
    out, orig, ws = _mask(table, tokenizer, np.arange(1000))
    num_words = _word_ids(orig, ws, tokenizer).max(axis=1) + 1
    wanted = np.maximum(1, np.floor(0.15 * num_words + 0.5))
    picked = [
        len(np.unique(w[c])) for w, c in zip(_word_ids(orig, ws, tokenizer), _chosen_tokens(out))
    ]
    assert np.mean(picked == wanted) > 0.99


def test_max_predictions_derivation():
    make = lambda **kw: pipeline.DataConfig(train_files=("x", ), **kw)  # noqa: E731
    assert pipeline.max_predictions(make(seq_len=128)) == 32
    assert pipeline.max_predictions(make(seq_len=512)) == 104
    assert pipeline.max_predictions(make(seq_len=512, max_predictions=80)) == 80
    assert pipeline.max_predictions(make(seq_len=8, mask_rate=0.5)) == 8


def test_rows_without_words_get_no_predictions(tokenizer):
    ids_L = np.full(SEQ_LEN, tokenizer.pad_id, np.int32)
    ids_L[:2] = tokenizer.cls_id, tokenizer.sep_id
    out, _, _ = _mask((ids_L[None], np.zeros((1, SEQ_LEN), bool)), tokenizer, np.arange(4))
    assert not out["masked_weights"].any()
    np.testing.assert_array_equal(out["input_ids"], np.tile(ids_L, (4, 1)))


def test_two_segments_as_electras_builder(table, tokenizer):
    """ELECTRA's builder: ~90% of rows `[CLS] A [SEP] B [SEP]`, B (and its [SEP]) at type 1,
    the cut at a word start near the middle; the text is kept, one token shifted (a full row
    loses its last one); masks never land on the inserted [SEP]."""
    g = np.arange(400)
    out, orig, ws = _mask(table, tokenizer, g, two_segment_rate=0.9)
    ids, types = out["input_ids"], out["token_type_ids"]
    restored = ids.copy()
    rows, slots = np.nonzero(out["masked_weights"])
    restored[rows, out["masked_positions"][rows, slots]] = out["masked_labels"][rows, slots]
    split_rows = 0
    for i in range(len(g)):
        real = int((orig[i] != tokenizer.pad_id).sum())
        if not types[i].any():
            np.testing.assert_array_equal(restored[i], orig[i])
            continue
        split_rows += 1
        s = int(np.argmax(types[i])) - 1  # the inserted [SEP]
        assert restored[i][s] == tokenizer.sep_id and 1 < s < real
        middle, pos = 1 + (real - 2) // 2, np.arange(SEQ_LEN)
        starts = np.nonzero(ws[i] & (pos >= middle) & (pos < real - 1))[0]
        assert s == (starts[0] if len(starts) else middle)  # the word start from the middle on
        last = min(real, SEQ_LEN - 1)
        np.testing.assert_array_equal(types[i], (pos > s) & (pos <= last))
        assert restored[i][last] == tokenizer.sep_id
        np.testing.assert_array_equal(restored[i][:s], orig[i][:s])
        np.testing.assert_array_equal(restored[i][s + 1:last], orig[i][s:last - 1])
        assert s not in out["masked_positions"][i][out["masked_weights"][i] > 0]
    assert abs(split_rows / len(g) - 0.9) < 0.05

    plain, _, _ = _mask(table, tokenizer, g)
    assert not plain["token_type_ids"].any()  # off by default: every type 0


def test_two_segment_rate_auto_follows_the_models_token_types(table, tokenizer):
    from flaxlm.errors import FlaxlmError

    auto = pipeline.DataConfig(train_files=("unused", ), seq_len=SEQ_LEN,
                               two_segment_rate=pipeline.AUTO)
    assert [pipeline.two_segment_rate(auto, n).two_segment_rate for n in (2, 1, 0)
            ] == [0.9, 0.0, 0.0]  # BERT/ELECTRA; XLM-R (tiny.py stays one segment); DistilBERT
    with pytest.raises(FlaxlmError, match="type_vocab_size=1: set it to 0"):
        pipeline.two_segment_rate(
            pipeline.DataConfig(train_files=("unused", ), two_segment_rate=0.5), 1)
    with pytest.raises(FlaxlmError, match="resolve it for the model first"):
        pipeline.make_masker(auto, tokenizer, 0)
    with pytest.raises(FlaxlmError, match="two_segment_rate=1.5"):
        pipeline.DataConfig(train_files=("unused", ), two_segment_rate=1.5)


def test_the_mlm_objective_resolves_auto_for_its_model(tokenizer):
    """AUTO reaches the objectives' batches through DataContext.type_vocab_size."""
    from flaxlm.objectives.mlm import MaskedLM
    from flaxlm.run.protocol import DataContext

    data = pipeline.DataConfig(train_files=(IT_EVAL, ), seq_len=SEQ_LEN,
                               two_segment_rate=pipeline.AUTO)
    types = {
        n: next(MaskedLM().train_batches(DataContext(data, tokenizer, 0, 16, type_vocab_size=n),
                                         0))["token_type_ids"]
        for n in (1, 2)
    }
    assert not types[1].any() and types[2].any()


def test_token_level_masking_splits_words(table, tokenizer):
    """`whole_word_masking=False` (BERT's and ELECTRA's original masking): round(15%) of the
    maskable tokens per row, chosen one by one, so multi-token words are often split."""
    g = np.arange(200)
    out, orig, ws = _mask(table, tokenizer, g, whole_word_masking=False, max_predictions=SEQ_LEN)
    word = _word_ids(orig, ws, tokenizer)
    chosen = _chosen_tokens(out)
    maskable = (~np.isin(orig, tokenizer.special_ids)).sum(axis=1)  # every token is a "word"
    np.testing.assert_array_equal(chosen.sum(axis=1),
                                  np.maximum(1, np.floor(0.15 * maskable + 0.5)).astype(int))
    assert not np.isin(orig[chosen], tokenizer.special_ids).any()
    split = 0  # chosen words with an unchosen token
    for i in range(len(g)):
        for w in np.unique(word[i][chosen[i]]):
            split += not chosen[i][word[i] == w].all()
    assert split > 50


def test_held_out_masks_are_the_same_for_every_run_seed(tokenizer):
    """A run's seed changes its training masks, never its held-out ones: eval losses of runs
    with different seeds score the same masked positions."""
    from flaxlm.objectives.mlm import MaskedLM
    from flaxlm.run.protocol import DataContext

    data = pipeline.DataConfig(train_files=(IT_EVAL, ), eval_files=(IT_EVAL, ), seq_len=SEQ_LEN)

    def masked_ids(seed, batches):
        return np.concatenate(
            [b["input_ids"] for b in batches(DataContext(data, tokenizer, seed, 16))])

    evals = [masked_ids(s, MaskedLM().eval_batches) for s in (0, 7)]
    np.testing.assert_array_equal(evals[0], evals[1])
    trains = [masked_ids(s, lambda ctx: [next(MaskedLM().train_batches(ctx, 0))]) for s in (0, 7)]
    assert (trains[0] != trains[1]).any()

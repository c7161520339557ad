"""Host-local tf.data pipeline: packed examples → dynamic whole-word masking → MLM batches.

Stream order. The *global* stream is a sequence of packed examples indexed by g = 0, 1, 2, …;
global batch k is examples [k·G, (k+1)·G) with G = host_batch_size · process_count, and host p
takes the slice [k·G + p·B, k·G + (p+1)·B). So the data a step sees does not depend on
how many hosts share it, and batch k depends only on (data, seed, k). A stream may also start at
any example e (a resumed run whose batch size changed): its batch k is then [e + k·G, e + (k+1)·G).
  * in memory (text files; prepared shards up to `IN_MEMORY_MAX_TOKENS`): example g is row
    `index_shuffle(g mod N)` of the packed table, permuted afresh per epoch g // N by a
    stateless seed. Starting at any example is O(1).
  * streamed (`tfds:` sources; larger prepared shards): the packed stream repeats and passes a
    shuffle buffer with a fixed seed; starting at example e *reads and drops* e examples
    (minutes for millions of examples; prefer `prepare` + in-memory shards where resumption
    matters). TFDS text is re-tokenized on every epoch, on every host.
Masks are drawn from counter-based random numbers keyed by (seed, g): a new epoch (new g) gets
new masks, the same seed gives the same masks, and no masking state lives in Python.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from flaxlm.data import prepare, sources
from flaxlm.data.tokenizers import Tokenizer
from flaxlm.errors import FlaxlmError

# Token budget of a packed table kept in host memory (5 bytes a token: int32 id + bool word start).
IN_MEMORY_MAX_TOKENS = 1 << 28
_STREAM_BLOCK = 256  # examples per Python→tf.data hand-off when packing on the fly


AUTO = -1.0  # DataConfig.two_segment_rate: decided by the model's token types
# google-research/electra build_pretraining_dataset.py (at 8a46635) lines 59-61: one segment in
# 10% of the examples, two in the rest.
ELECTRA_TWO_SEGMENT_RATE = 0.9


def two_segment_rate(cfg: "DataConfig", type_vocab_size: int) -> "DataConfig":
    """`cfg` with AUTO resolved for a model with `type_vocab_size` token types: ELECTRA's rate
    when it has a type 1 to train (BERT, ELECTRA), else 0 (XLM-R and RoBERTa have one type and
    train on one segment; a model without types, DistilBERT, does not read them)."""
    rate = cfg.two_segment_rate
    if rate == AUTO:
        rate = ELECTRA_TWO_SEGMENT_RATE if type_vocab_size >= 2 else 0.0
    elif rate > 0 and type_vocab_size == 1:
        raise FlaxlmError(f"data.two_segment_rate={rate} gives the second segment token type 1, "
                          "but model.type_vocab_size=1: set it to 0")
    return dataclasses.replace(cfg, two_segment_rate=rate)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    train_files: tuple[str, ...]
    eval_files: tuple[str, ...] = ()
    tokenizer: str = ""
    seq_len: int = 128
    max_predictions: int = 0  # 0: derived by `max_predictions(cfg)`
    mask_rate: float = 0.15  # fraction of words chosen
    mask_token_rate: float = 0.8  # of chosen tokens: replaced by the mask id …
    random_token_rate: float = 0.1  # … or by a random non-special token; the rest stay unchanged
    # False: every non-special token is its own "word" (BERT's and ELECTRA's token-level masking).
    whole_word_masking: bool = True
    shuffle_buffer: int = 10_000  # streamed sources only
    test_files: tuple[str, ...] = ()  # fine-tuning: evaluated once on the best epoch's weights
    # Fine-tuning k-fold (flaxlm/objectives/finetune_config.py): with folds >= 2 and fold >= 0, train
    # on the training data without its fold-th slice and evaluate on that slice.
    folds: int = 0
    fold: int = -1
    # Fine-tuning batches are cut to the smallest of these lengths that holds their longest row
    # (flaxlm/data/length_buckets.py); empty: every batch at seq_len. Packed MLM rows are full.
    length_buckets: tuple[int, ...] = ()
    # Fraction of packed pre-training rows cut into two segments, `[CLS] A [SEP] B [SEP]` with B
    # at token type 1 (see `make_masker`); 0: one segment, every token type 0; AUTO (the run
    # config's default): resolved by `two_segment_rate` from the model's token types.
    two_segment_rate: float = 0.0
    text_field: str = "text"  # Parquet column / JSON lines field of a document (corpus_files)

    def __post_init__(self):
        for key in ("train_files", "eval_files", "test_files"):
            if isinstance(getattr(self, key), str):
                raise FlaxlmError(
                    f"DataConfig.{key}: expected a tuple of paths, "
                    f"got the string {getattr(self, key)!r}"
                )
        if not self.text_field:
            raise FlaxlmError("DataConfig.text_field: empty; name the Parquet column / JSON "
                              "field holding the text (default 'text')")
        if self.seq_len < 8:
            raise FlaxlmError(f"DataConfig.seq_len={self.seq_len}: must be at least 8")
        if not 0 <= self.max_predictions <= self.seq_len:
            raise FlaxlmError(
                f"DataConfig.max_predictions={self.max_predictions}: must be in [0, seq_len]"
            )
        if not 0 < self.mask_rate < 1:
            raise FlaxlmError(f"DataConfig.mask_rate={self.mask_rate}: must be in (0, 1)")
        rates = (self.mask_token_rate, self.random_token_rate)
        if min(rates) < 0 or sum(rates) > 1:
            raise FlaxlmError(
                f"DataConfig.mask_token_rate={rates[0]}, random_token_rate={rates[1]}: "
                "must be ≥ 0 with sum ≤ 1"
            )
        if not (0 <= self.two_segment_rate <= 1 or self.two_segment_rate == AUTO):
            raise FlaxlmError(
                f"data.two_segment_rate={self.two_segment_rate}: must be in [0, 1], or {AUTO} "
                "(ELECTRA's rate for a model with two token types, else 0)"
            )
        if self.shuffle_buffer < 1:
            raise FlaxlmError(
                f"DataConfig.shuffle_buffer={self.shuffle_buffer}: must be at least 1"
            )


def max_predictions(cfg: DataConfig) -> int:
    """M, the fixed number of prediction slots: the configured one, or the expected number of masked
    tokens plus 20% and 8 tokens of headroom for long words, rounded up to a multiple of 8."""
    if cfg.max_predictions:
        return cfg.max_predictions
    headroom = cfg.mask_rate * cfg.seq_len * 1.2 + 8
    return min(cfg.seq_len, 8 * math.ceil(headroom / 8))


# --- masking ------------------------------------------------------------------------------------


def make_masker(
    cfg: DataConfig, tokenizer: Tokenizer, seed: int
) -> Callable[..., dict[str, tf.Tensor]]:
    """`mask(g_B, ids_BxL, word_starts_BxL) -> features` for a batch of packed examples with global
    indices g_B; every feature has the leading batch dimension B.

    Whole-word masking: k = max(1, round(mask_rate · words)) words are drawn by random scores and
    taken in score order while their tokens fit in M (two greedy passes, so one long word does not
    end the draw); every sub-token of a taken word is a prediction. With
    `cfg.whole_word_masking=False` every token starts a word: k = max(1, round(mask_rate ·
    maskable tokens)) distinct tokens, at most M.
    Each prediction independently becomes the mask id / a random non-special token / itself.
    Special tokens and padding are never in a word, hence never masked.

    Two segments (`two_segment_rate` of the rows, drawn per example): a [SEP] is put in at the
    first word start from the middle of the row's text on, the rest moves one position right
    (a full row loses its last text token), and everything after that [SEP] up to the final one
    gets token type 1, so pair fine-tuning starts from a trained type-1 embedding. This follows
    google-research/electra build_pretraining_dataset.py (at 8a46635): 10% of examples keep one
    segment (lines 59-61), the first segment fills about half the length (lines 63-79, there at a
    sentence boundary, here at a word boundary: packed rows keep no sentence ends), token type 1
    for the second segment and its [SEP] (lines 100-104). BERT's create_pretraining_data.py
    (at eedf571, lines 258-319) always makes two segments, its second one from another document
    half of the time for next-sentence prediction, which flaxlm does not train.
    The whole batch is masked by one set of ops (per-example maps cost ~30 op launches per row),
    and every random number is a hash of (seed, g, stream, position): a row's mask does not
    depend on which batch or host it lands in.
    """
    if cfg.two_segment_rate == AUTO:
        raise FlaxlmError("data.two_segment_rate is AUTO: resolve it for the model first "
                          "(pipeline.two_segment_rate)")
    seq_len, budget = cfg.seq_len, max_predictions(cfg)
    specials_S = tf.constant(tokenizer.special_ids, tf.int32)
    non_special_R = tf.constant(
        np.setdiff1d(np.arange(tokenizer.vocab_size), tokenizer.special_ids), tf.int32
    )
    mask_below = cfg.mask_token_rate
    random_below = cfg.mask_token_rate + cfg.random_token_rate
    slot_W = tf.range(seq_len)
    word_stream, action_stream, token_stream, segment_stream = (
        _stream_key(seed, s) for s in range(4))

    def two_segments(g_B, ids_BxL, word_starts_BxL):
        """(ids, word starts, token types) with the second segment cut off where drawn."""
        real_B = tf.reduce_sum(tf.cast(ids_BxL != tokenizer.pad_id, tf.int32), axis=1)
        pos_1xL = slot_W[None, :]
        # The first word start at or after the middle of the text (positions 1 … real-2).
        middle_Bx1 = (1 + (real_B - 2) // 2)[:, None]
        candidate_BxL = word_starts_BxL & (pos_1xL >= middle_Bx1) & (pos_1xL < real_B[:, None] - 1)
        split_B = tf.where(tf.reduce_any(candidate_BxL, axis=1),
                           tf.argmax(tf.cast(candidate_BxL, tf.int32), axis=1,
                                     output_type=tf.int32),
                           middle_Bx1[:, 0])
        drawn_B = _uniform(segment_stream, g_B, 1)[:, 0] < cfg.two_segment_rate
        split_B = tf.where(drawn_B & (real_B >= 4), split_B, seq_len)  # seq_len: no split
        split_Bx1 = split_B[:, None]

        def shifted(x_BxL):  # x[i-1] at position i
            return tf.concat([x_BxL[:, :1], x_BxL[:, :-1]], axis=1)
        ids_BxL = tf.where(pos_1xL < split_Bx1, ids_BxL,
                           tf.where(pos_1xL == split_Bx1, tokenizer.sep_id, shifted(ids_BxL)))
        # A full row pushed its last text token out: it still ends with [SEP].
        full_Bx1 = (real_B == seq_len)[:, None] & (split_Bx1 < seq_len)
        ids_BxL = tf.where(full_Bx1 & (pos_1xL == seq_len - 1), tokenizer.sep_id, ids_BxL)
        word_starts_BxL = tf.where(pos_1xL < split_Bx1, word_starts_BxL,
                                   (pos_1xL == split_Bx1 + 1) | (
                                       (pos_1xL > split_Bx1) & shifted(word_starts_BxL)))
        types_BxL = tf.cast((pos_1xL > split_Bx1) & (ids_BxL != tokenizer.pad_id), tf.int32)
        return ids_BxL, word_starts_BxL, types_BxL

    def mask(g_B, ids_BxL, word_starts_BxL):
        batch = tf.shape(ids_BxL)[0]
        g_B = tf.cast(g_B, tf.int64)
        if cfg.two_segment_rate > 0:
            ids_BxL, word_starts_BxL, types_BxL = two_segments(g_B, ids_BxL, word_starts_BxL)
        else:
            types_BxL = tf.zeros_like(ids_BxL)
        if not cfg.whole_word_masking:  # after the cut, which stays at a word start
            word_starts_BxL = tf.ones_like(word_starts_BxL)
        maskable_BxL = ~tf.reduce_any(ids_BxL[:, :, None] == specials_S, axis=2)
        # Word number of each token; -1 before the first word start (cannot happen for packed data).
        word_BxL = tf.cumsum(tf.cast(word_starts_BxL & maskable_BxL, tf.int32), axis=1) - 1
        maskable_BxL &= word_BxL >= 0
        num_words_B = word_BxL[:, -1] + 1
        # Word slots W = L (there are never more words than tokens); unused slots sort last.
        # Segment ids: row r's words at r·(L+1) + word, its non-words at r·(L+1) + L (dropped).
        row_offset_Bx1 = tf.range(batch)[:, None] * (seq_len + 1)
        segment_BxL = row_offset_Bx1 + tf.where(maskable_BxL, word_BxL, seq_len)
        word_len_BxW = tf.reshape(
            tf.math.unsorted_segment_sum(
                tf.ones_like(segment_BxL), segment_BxL, batch * (seq_len + 1)
            ),
            [batch, seq_len + 1],
        )[:, :seq_len]
        num_to_mask_B = tf.where(
            num_words_B > 0,
            tf.maximum(1, tf.cast(cfg.mask_rate * tf.cast(num_words_B, tf.float32) + 0.5, tf.int32)),
            0,
        )
        is_word_BxW = slot_W < num_words_B[:, None]
        score_BxW = tf.where(is_word_BxW, _uniform(word_stream, g_B, seq_len), 2.0)
        order_BxW = tf.argsort(score_BxW, axis=1)
        len_BxW = tf.gather(word_len_BxW, order_BxW, batch_dims=1)  # words in random order
        fits_BxW = tf.gather(is_word_BxW, order_BxW, batch_dims=1) & (len_BxW <= budget)
        first_BxW = _take_prefix(len_BxW, fits_BxW, budget, num_to_mask_B[:, None])
        # A word overflowing the budget ends the first pass; shorter words after it may still fit.
        tokens_left_Bx1 = budget - tf.reduce_sum(
            len_BxW * tf.cast(first_BxW, tf.int32), axis=1, keepdims=True
        )
        words_left_Bx1 = num_to_mask_B[:, None] - tf.reduce_sum(
            tf.cast(first_BxW, tf.int32), axis=1, keepdims=True
        )
        second_BxW = _take_prefix(
            len_BxW, fits_BxW & ~first_BxW & (len_BxW <= tokens_left_Bx1), tokens_left_Bx1,
            words_left_Bx1,
        )
        # argsort of a permutation is its inverse: back from score order to word order.
        chosen_BxW = tf.gather(
            first_BxW | second_BxW, tf.argsort(order_BxW, axis=1), batch_dims=1
        )
        chosen_BxL = maskable_BxL & tf.gather(chosen_BxW, tf.maximum(word_BxL, 0), batch_dims=1)

        # Slot m of a row holds the position of its m-th chosen token (at most M by the draw).
        rank_BxL = tf.where(chosen_BxL, tf.cumsum(tf.cast(chosen_BxL, tf.int32), axis=1) - 1, -1)
        positions_BxM = tf.reduce_sum(
            tf.one_hot(rank_BxL, budget, dtype=tf.int32) * slot_W[None, :, None], axis=1
        )
        count_B = tf.reduce_sum(tf.cast(chosen_BxL, tf.int32), axis=1)
        used_BxM = tf.range(budget)[None, :] < count_B[:, None]
        action_BxL = _uniform(action_stream, g_B, seq_len)
        random_ids_BxL = tf.gather(
            non_special_R, _below(token_stream, g_B, seq_len, non_special_R.shape[0])
        )
        replaced_BxL = tf.where(
            action_BxL < mask_below,
            tokenizer.mask_id,
            tf.where(action_BxL < random_below, random_ids_BxL, ids_BxL),
        )
        return {
            "input_ids": tf.where(chosen_BxL, replaced_BxL, ids_BxL),
            "attention_mask": tf.cast(ids_BxL != tokenizer.pad_id, tf.int32),
            "token_type_ids": types_BxL,
            "masked_positions": positions_BxM,
            "masked_labels": tf.where(
                used_BxM, tf.gather(ids_BxL, positions_BxM, batch_dims=1), 0
            ),
            "masked_weights": tf.cast(used_BxM, tf.float32),
        }

    return mask


def _take_prefix(len_BxW, candidate_BxW, max_tokens, max_words):
    """Candidates, in order, while their running token and word counts stay within the limits."""
    tokens_BxW = tf.cumsum(len_BxW * tf.cast(candidate_BxW, tf.int32), axis=1)
    words_BxW = tf.cumsum(tf.cast(candidate_BxW, tf.int32), axis=1)
    return candidate_BxW & (tokens_BxW <= max_tokens) & (words_BxW <= max_words)


# --- counter-based random numbers ----------------------------------------------------------------
# splitmix64 (Steele, Lea & Flood, 2014): state_k = start + k·γ, output = mix(state_k). Keyed by
# (seed, stream), started per example g and indexed by position, so random numbers can be drawn
# for a whole batch in a few vectorized ops and still depend only on (seed, g, position).

_GAMMA = 0x9E3779B97F4A7C15


def _mix64(z: tf.Tensor) -> tf.Tensor:
    for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        z = _xor_shift(z, shift) * tf.constant(multiplier, tf.uint64)
    return _xor_shift(z, 31)


def _xor_shift(z: tf.Tensor, shift: int) -> tf.Tensor:
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(shift, tf.uint64)))


def _stream_key(seed: int, stream: int) -> tf.Tensor:
    return _mix64(tf.constant(((seed * 3 + stream) * _GAMMA) % (1 << 64), tf.uint64))


def _bits(key: tf.Tensor, g_B: tf.Tensor, length: int) -> tf.Tensor:
    """[B, length] uint64 random words for examples g_B."""
    start_Bx1 = _mix64(tf.bitwise.bitwise_xor(key, _mix64(tf.bitcast(g_B, tf.uint64))))[:, None]
    steps_L = tf.cast(tf.range(1, length + 1), tf.uint64) * tf.constant(_GAMMA, tf.uint64)
    return _mix64(start_Bx1 + steps_L[None, :])


def _uniform(key: tf.Tensor, g_B: tf.Tensor, length: int) -> tf.Tensor:
    """[B, length] float32 uniform in [0, 1) with 24 random bits."""
    top24 = tf.bitwise.right_shift(_bits(key, g_B, length), tf.constant(40, tf.uint64))
    return tf.cast(top24, tf.float32) * 2.0**-24


def _below(key: tf.Tensor, g_B: tf.Tensor, length: int, n: int) -> tf.Tensor:
    """[B, length] int32 uniform in [0, n): 64-bit words mod n (bias ≤ n / 2^64)."""
    return tf.cast(tf.math.floormod(_bits(key, g_B, length), tf.constant(n, tf.uint64)), tf.int32)


# --- streams ------------------------------------------------------------------------------------


def build_train_stream(
    cfg: DataConfig,
    tokenizer: Tokenizer,
    *,
    seed: int,
    host_batch_size: int,
    start_example: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host-local MLM batches whose first global batch starts at global example
    `start_example` (see the module docstring for order and resumption). Counting the resume
    position in examples, not batches, keeps it exact when the batch size changes between runs."""
    _check_hosts(host_batch_size, process_index, process_count)
    if not cfg.train_files:
        raise FlaxlmError("DataConfig.train_files: empty; name at least one corpus")
    if start_example < 0:
        raise FlaxlmError(f"start_example={start_example}: must be ≥ 0")
    B, p, G = host_batch_size, process_index, host_batch_size * process_count
    masker = make_masker(cfg, tokenizer, seed)
    source = _train_source(cfg, tokenizer)
    if isinstance(source, tuple):
        # Variables, not constants: tf.data serializes captured constants into its graph (measured:
        # 2 extra copies and 6 s for a 640 MB table; protobuf caps a graph at 2 GB).
        ids_NxL, ws_NxL = (tf.Variable(a, trainable=False) for a in source)
        n = len(source[0])

        def examples(j_B):
            g_B = start_example + (j_B // B) * G + p * B + j_B % B
            epoch_B = g_B // n

            # Each epoch is its own permutation; a batch spans one or two epochs (more only when
            # the corpus has fewer rows than a batch), each shuffled for the whole batch at once.
            def shuffle_rows(epoch, row_B):
                permuted_B = tf.random.experimental.index_shuffle(
                    g_B % n, seed=tf.stack([tf.constant(seed, tf.int64), -1 - epoch]),
                    max_index=tf.constant(n - 1, tf.int64),
                )
                return epoch + 1, tf.where(epoch_B == epoch, permuted_B, row_B)

            _, row_B = tf.while_loop(
                lambda epoch, _: epoch <= tf.reduce_max(epoch_B), shuffle_rows,
                (tf.reduce_min(epoch_B), tf.zeros_like(g_B)),
            )
            return g_B, tf.gather(ids_NxL, row_B), tf.gather(ws_NxL, row_B)

        ds = tf.data.Dataset.range(0, np.iinfo(np.int64).max - start_example).batch(B)
        masked_batch = lambda j_B: masker(*examples(j_B))  # noqa: E731
    else:
        ds = (
            source.repeat().shuffle(cfg.shuffle_buffer, seed=seed).enumerate().skip(start_example)
        )
        ds = ds.filter(lambda g, ex: ((g - start_example) % G) // B == p)
        ds = ds.batch(B, drop_remainder=True)
        masked_batch = lambda g_B, ex: masker(g_B, *ex)  # noqa: E731
    ds = ds.map(masked_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def build_eval_batches(
    cfg: DataConfig,
    tokenizer: Tokenizer,
    *,
    host_batch_size: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """One pass over `eval_files` in order with fixed masks. Every host gets the same number of
    batches; rows past the end are `[CLS] [SEP]` fillers whose `masked_weights` are all 0."""
    _check_hosts(host_batch_size, process_index, process_count)
    if not cfg.eval_files:
        return []
    ids_NxL, ws_NxL = _in_memory(cfg.eval_files, cfg, tokenizer)
    n, B, G = len(ids_NxL), host_batch_size, host_batch_size * process_count
    j = np.arange(-(-n // G) * B)
    g = (j // B) * G + process_index * B + j % B
    filler_L = np.full(cfg.seq_len, tokenizer.pad_id, np.int32)
    filler_L[:2] = tokenizer.cls_id, tokenizer.sep_id
    real = g < n
    rows_ids = np.where(real[:, None], ids_NxL[np.minimum(g, n - 1)], filler_L)
    rows_ws = real[:, None] & ws_NxL[np.minimum(g, n - 1)]
    masker = make_masker(cfg, tokenizer, seed)
    ds = tf.data.Dataset.from_tensor_slices((g, rows_ids, rows_ws))
    ds = ds.batch(B).map(masker, num_parallel_calls=tf.data.AUTOTUNE)
    return list(ds.as_numpy_iterator())


def _check_hosts(host_batch_size: int, process_index: int, process_count: int) -> None:
    if host_batch_size < 1:
        raise FlaxlmError(f"host_batch_size={host_batch_size}: must be at least 1")
    if not 0 <= process_index < process_count:
        raise FlaxlmError(
            f"process_index={process_index}: must be in [0, process_count={process_count})"
        )


def _train_source(
    cfg: DataConfig, tokenizer: Tokenizer
) -> tuple[np.ndarray, np.ndarray] | tf.data.Dataset:
    """Packed train examples: a table in memory when it fits, else a tf.data stream."""
    specs = cfg.train_files
    if any(sources.is_prepared(s) for s in specs):
        _require_all_prepared(specs, "train_files")
        if sources.prepared_num_examples(specs) * cfg.seq_len <= IN_MEMORY_MAX_TOKENS:
            return sources.load_prepared(
                specs, seq_len=cfg.seq_len, vocab_size=tokenizer.vocab_size
            )
        return sources.prepared_dataset(specs, seq_len=cfg.seq_len, vocab_size=tokenizer.vocab_size)
    if any(s.startswith(sources.TFDS_PREFIX) for s in specs):
        return _packed_stream(specs, tokenizer, cfg.seq_len, cfg.text_field)
    return prepare.pack_corpus(specs, tokenizer, seq_len=cfg.seq_len, text_field=cfg.text_field)


def _in_memory(
    specs: tuple[str, ...], cfg: DataConfig, tokenizer: Tokenizer
) -> tuple[np.ndarray, np.ndarray]:
    if any(sources.is_prepared(s) for s in specs):
        _require_all_prepared(specs, "eval_files")
        return sources.load_prepared(specs, seq_len=cfg.seq_len, vocab_size=tokenizer.vocab_size)
    return prepare.pack_corpus(specs, tokenizer, seq_len=cfg.seq_len, text_field=cfg.text_field)


def _require_all_prepared(specs: tuple[str, ...], key: str) -> None:
    raw = [s for s in specs if not sources.is_prepared(s)]
    if raw:
        raise FlaxlmError(
            f"DataConfig.{key}: {raw} are raw text but others are prepared shards; use one kind"
        )


def _packed_stream(
    specs: tuple[str, ...], tokenizer: Tokenizer, seq_len: int, text_field: str
) -> tf.data.Dataset:
    """One epoch of packed examples, tokenized on the fly (tf.data re-runs it on every repeat)."""

    def blocks():
        token_docs = prepare.tokenize_documents(
            sources.iter_documents(specs, text_field), tokenizer
        )
        yield from prepare.pack_examples(
            token_docs,
            seq_len=seq_len,
            cls_id=tokenizer.cls_id,
            sep_id=tokenizer.sep_id,
            pad_id=tokenizer.pad_id,
            examples_per_block=_STREAM_BLOCK,
        )

    # Fail here with a FlaxlmError, not inside a tf.data thread that would rewrap it.
    if next(blocks(), None) is None:
        raise FlaxlmError(f"{', '.join(specs)}: the text yields no tokens")
    signature = (tf.TensorSpec([None, seq_len], tf.int32), tf.TensorSpec([None, seq_len], tf.bool))
    return tf.data.Dataset.from_generator(blocks, output_signature=signature).unbatch()

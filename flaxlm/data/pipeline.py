"""Host-local tf.data pipeline: packed examples → dynamic whole-word masking → MLM batches.

Stream order. The *global* stream is a sequence of packed examples indexed by g = 0, 1, 2, …;
global batch k is examples [k·G, (k+1)·G) with G = host_batch_size · process_count, and host p
takes the slice [k·G + p·B, k·G + (p+1)·B). So the data a step sees does not depend on
how many hosts share it, and batch k depends only on (data, seed, k):
  * in memory (text files; prepared shards up to `IN_MEMORY_MAX_TOKENS`): example g is row
    `index_shuffle(g mod N)` of the packed table, permuted afresh per epoch g // N by a
    stateless seed. Starting at batch k is O(1).
  * streamed (`tfds:` sources; larger prepared shards): the packed stream repeats and passes a
    shuffle buffer with a fixed seed; starting at batch k *reads and drops* k·G examples
    (minutes for millions of examples; prefer `prepare` + in-memory shards where resumption
    matters). TFDS text is re-tokenized on every epoch, on every host.
Masks are drawn from `tf.random.stateless_*` keyed by (seed, g): a new epoch (new g) gets new
masks, the same seed gives the same masks, and no masking state lives in Python.
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
    shuffle_buffer: int = 10_000  # streamed sources only

    def __post_init__(self):
        for key in ("train_files", "eval_files"):
            if isinstance(getattr(self, key), str):
                raise FlaxlmError(
                    f"DataConfig.{key}: expected a tuple of paths, "
                    f"got the string {getattr(self, key)!r}"
                )
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
    """`mask(g, ids_L, word_starts_L) -> features` for one packed example with global index g.

    Whole-word masking: k = max(1, round(mask_rate · words)) words are drawn by random scores and
    taken in score order while their tokens fit in M (two greedy passes, so one long word does not
    end the draw); every sub-token of a taken word is a prediction.
    Each prediction independently becomes the mask id / a random non-special token / itself.
    Special tokens and padding are never in a word, hence never masked.
    """
    seq_len, budget = cfg.seq_len, max_predictions(cfg)
    specials_S = tf.constant(tokenizer.special_ids, tf.int32)
    non_special_R = tf.constant(
        np.setdiff1d(np.arange(tokenizer.vocab_size), tokenizer.special_ids), tf.int32
    )
    mask_below = cfg.mask_token_rate
    random_below = cfg.mask_token_rate + cfg.random_token_rate

    def mask(g, ids_L, word_starts_L):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(g, tf.int64)])
        word_key, action_key, token_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        maskable_L = ~tf.reduce_any(ids_L[:, None] == specials_S[None, :], axis=1)
        # Word number of each token; -1 before the first word start (cannot happen for packed data).
        word_L = tf.cumsum(tf.cast(word_starts_L & maskable_L, tf.int32)) - 1
        maskable_L &= word_L >= 0
        num_words = word_L[-1] + 1
        # Word slots W = L (there are never more words than tokens); unused slots sort last.
        slot_W = tf.range(seq_len)
        word_len_W = tf.math.unsorted_segment_sum(
            tf.ones([seq_len], tf.int32), tf.where(maskable_L, word_L, seq_len), seq_len + 1
        )[:seq_len]
        num_to_mask = tf.where(
            num_words > 0,
            tf.maximum(1, tf.cast(cfg.mask_rate * tf.cast(num_words, tf.float32) + 0.5, tf.int32)),
            0,
        )
        score_W = tf.where(
            slot_W < num_words, tf.random.stateless_uniform([seq_len], word_key), 2.0
        )
        order_W = tf.argsort(score_W)
        len_W = tf.gather(word_len_W, order_W)  # from here on, words in random order
        fits_W = (slot_W < num_words) & (len_W <= budget)
        first_W = _take_prefix(len_W, fits_W, budget, num_to_mask)
        # A word overflowing the budget ends the first pass; shorter words after it may still fit.
        tokens_left = budget - tf.reduce_sum(len_W * tf.cast(first_W, tf.int32))
        words_left = num_to_mask - tf.reduce_sum(tf.cast(first_W, tf.int32))
        second_W = _take_prefix(
            len_W, fits_W & ~first_W & (len_W <= tokens_left), tokens_left, words_left
        )
        chosen_W = tf.gather(first_W | second_W, tf.math.invert_permutation(order_W))
        chosen_L = maskable_L & tf.gather(chosen_W, tf.maximum(word_L, 0))

        positions = tf.cast(tf.where(chosen_L)[:, 0], tf.int32)
        used_M = tf.range(budget) < tf.size(positions)
        positions_M = tf.ensure_shape(
            tf.pad(positions, [[0, budget - tf.size(positions)]]), [budget]
        )
        action_L = tf.random.stateless_uniform([seq_len], action_key)
        random_ids_L = tf.gather(
            non_special_R,
            tf.random.stateless_uniform(
                [seq_len], token_key, minval=0, maxval=tf.size(non_special_R), dtype=tf.int32
            ),
        )
        replaced_L = tf.where(
            action_L < mask_below,
            tokenizer.mask_id,
            tf.where(action_L < random_below, random_ids_L, ids_L),
        )
        return {
            "input_ids": tf.where(chosen_L, replaced_L, ids_L),
            "attention_mask": tf.cast(ids_L != tokenizer.pad_id, tf.int32),
            "token_type_ids": tf.zeros([seq_len], tf.int32),
            "masked_positions": positions_M,
            "masked_labels": tf.where(used_M, tf.gather(ids_L, positions_M), 0),
            "masked_weights": tf.cast(used_M, tf.float32),
        }

    return mask


def _take_prefix(len_W, candidate_W, max_tokens, max_words):
    """Candidates, in order, while their running token and word counts stay within the limits."""
    tokens_W = tf.cumsum(len_W * tf.cast(candidate_W, tf.int32))
    words_W = tf.cumsum(tf.cast(candidate_W, tf.int32))
    return candidate_W & (tokens_W <= max_tokens) & (words_W <= max_words)


# --- streams ------------------------------------------------------------------------------------


def build_train_stream(
    cfg: DataConfig,
    tokenizer: Tokenizer,
    *,
    seed: int,
    host_batch_size: int,
    start_batch: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host-local MLM batches (see the module docstring for order and resumption)."""
    _check_hosts(host_batch_size, process_index, process_count)
    if not cfg.train_files:
        raise FlaxlmError("DataConfig.train_files: empty; name at least one corpus")
    if start_batch < 0:
        raise FlaxlmError(f"start_batch={start_batch}: must be ≥ 0")
    B, p, G = host_batch_size, process_index, host_batch_size * process_count
    masker = make_masker(cfg, tokenizer, seed)
    source = _train_source(cfg, tokenizer)
    if isinstance(source, tuple):
        # Variables, not constants: tf.data serializes captured constants into its graph (measured:
        # 2 extra copies and 6 s for a 640 MB table; protobuf caps a graph at 2 GB).
        ids_NxL, ws_NxL = (tf.Variable(a, trainable=False) for a in source)
        n = len(source[0])

        def example(j):
            g = (j // B) * G + p * B + j % B
            # Negative second seed word: never equal to a mask key (seed, g ≥ 0).
            epoch_seed = tf.stack([tf.constant(seed, tf.int64), -1 - g // n])
            row = tf.random.experimental.index_shuffle(
                g % n, seed=epoch_seed, max_index=tf.constant(n - 1, tf.int64)
            )
            return masker(g, tf.gather(ids_NxL, row), tf.gather(ws_NxL, row))

        ds = tf.data.Dataset.range(start_batch * B, np.iinfo(np.int64).max).map(
            example, num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        ds = (
            source.repeat().shuffle(cfg.shuffle_buffer, seed=seed).enumerate().skip(start_batch * G)
        )
        ds = ds.filter(lambda g, ex: (g % G) // B == p)
        ds = ds.map(lambda g, ex: masker(g, *ex), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(B, drop_remainder=True).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


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
    ds = ds.map(masker, num_parallel_calls=tf.data.AUTOTUNE).batch(B)
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
        return _packed_stream(specs, tokenizer, cfg.seq_len)
    return prepare.pack_corpus(specs, tokenizer, seq_len=cfg.seq_len)


def _in_memory(
    specs: tuple[str, ...], cfg: DataConfig, tokenizer: Tokenizer
) -> tuple[np.ndarray, np.ndarray]:
    if any(sources.is_prepared(s) for s in specs):
        _require_all_prepared(specs, "eval_files")
        return sources.load_prepared(specs, seq_len=cfg.seq_len, vocab_size=tokenizer.vocab_size)
    return prepare.pack_corpus(specs, tokenizer, seq_len=cfg.seq_len)


def _require_all_prepared(specs: tuple[str, ...], key: str) -> None:
    raw = [s for s in specs if not sources.is_prepared(s)]
    if raw:
        raise FlaxlmError(
            f"DataConfig.{key}: {raw} are raw text but others are prepared shards; use one kind"
        )


def _packed_stream(specs: tuple[str, ...], tokenizer: Tokenizer, seq_len: int) -> tf.data.Dataset:
    """One epoch of packed examples, tokenized on the fly (tf.data re-runs it on every repeat)."""

    def blocks():
        token_docs = prepare.tokenize_documents(sources.iter_documents(specs), tokenizer)
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

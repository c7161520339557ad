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
new masks, the same seed gives the same masks, and no masking state lives in Python. The held-out
set's masks are keyed by `EVAL_MASK_SEED`, not the run's seed, so runs of different seeds score
their held-out loss on the same masked positions and their eval curves compare directly.

With `data.host_reading = "own_units"` there is no global stream: each host reads its own units of
the corpus into its own stream, built the same two ways, and global batch k is the k-th B examples
of every host's stream (flaxlm/data/host_reading.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from flaxlm.data import host_reading, masking, prepare, sources
from flaxlm.data.tokenizer_dir import Tokenizer
from flaxlm.errors import FlaxlmError

# Token budget of a packed table kept in host memory (5 bytes a token: int32 id + bool word start).
IN_MEMORY_MAX_TOKENS = 1 << 28
_STREAM_BLOCK = 256  # examples per Python→tf.data hand-off when packing on the fly
# The held-out set's mask seed, whatever the run's seed: seed 0's, so runs at the default seed keep
# the eval losses they always had.
EVAL_MASK_SEED = 0

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
    # at token type 1 (see `masking.make_masker`); 0: one segment, every token type 0; AUTO (the run
    # config's default): resolved by `two_segment_rate` from the model's token types.
    two_segment_rate: float = 0.0
    text_field: str = "text"  # Parquet column / JSON lines field of a document (corpus_files)
    # "all": every host reads all of train_files; "own_units": each reads its own files / row
    # groups / prepared shards (flaxlm/data/host_reading.py).
    host_reading: str = host_reading.ALL

    def __post_init__(self):
        for key in ("train_files", "eval_files", "test_files"):
            if isinstance(getattr(self, key), str):
                raise FlaxlmError(f"DataConfig.{key}: expected a tuple of paths, "
                                  f"got the string {getattr(self, key)!r}")
        if not self.text_field:
            raise FlaxlmError("DataConfig.text_field: empty; name the Parquet column / JSON "
                              "field holding the text (default 'text')")
        host_reading.check_mode(self.host_reading)
        if self.seq_len < 8:
            raise FlaxlmError(f"DataConfig.seq_len={self.seq_len}: must be at least 8")
        if not 0 <= self.max_predictions <= self.seq_len:
            raise FlaxlmError(
                f"DataConfig.max_predictions={self.max_predictions}: must be in [0, seq_len]")
        self.masking_rates.validate("DataConfig")
        if not (0 <= self.two_segment_rate <= 1 or self.two_segment_rate == AUTO):
            raise FlaxlmError(
                f"data.two_segment_rate={self.two_segment_rate}: must be in [0, 1], or {AUTO} "
                "(ELECTRA's rate for a model with two token types, else 0)")
        if self.shuffle_buffer < 1:
            raise FlaxlmError(
                f"DataConfig.shuffle_buffer={self.shuffle_buffer}: must be at least 1")

    @property
    def masking_rates(self) -> masking.MaskingRates:
        """The masking fields as the masker takes them."""
        return masking.MaskingRates(mask_rate=self.mask_rate, mask_token_rate=self.mask_token_rate,
                                    random_token_rate=self.random_token_rate,
                                    max_predictions=self.max_predictions,
                                    whole_word_masking=self.whole_word_masking)


def max_predictions(cfg: DataConfig) -> int:
    """M, the fixed number of prediction slots of `cfg`'s rows (`MaskingRates.budget`)."""
    return cfg.masking_rates.budget(cfg.seq_len)


def make_masker(cfg: DataConfig, tokenizer: Tokenizer,
                seed: int) -> Callable[..., dict[str, tf.Tensor]]:
    """`masking.make_masker` for `cfg`'s rates, rows and two-segment share (AUTO resolved)."""
    if cfg.two_segment_rate == AUTO:
        raise FlaxlmError("data.two_segment_rate is AUTO: resolve it for the model first "
                          "(pipeline.two_segment_rate)")
    return masking.make_masker(cfg.masking_rates, tokenizer, seed, seq_len=cfg.seq_len,
                               two_segment_rate=cfg.two_segment_rate)


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
    B, p, P = host_batch_size, process_index, process_count
    G = B * P
    masker = make_masker(cfg, tokenizer, seed)
    own = cfg.host_reading == host_reading.OWN_UNITS
    if own:
        host_reading.check_units(cfg.train_files, P)
        source = _train_source(cfg, tokenizer, shard=(p, P))
        # This host's own stream from its example `first` on; mask keys unique over the hosts.
        first = host_reading.local_start(start_example, P)
        stream_index = lambda j_B: first + j_B  # noqa: E731
        mask_key = lambda i_B: i_B * P + p  # noqa: E731
    else:
        source = _train_source(cfg, tokenizer)
        first = start_example
        stream_index = lambda j_B: start_example + (j_B // B) * G + p * B + j_B % B  # noqa: E731
        mask_key = lambda g_B: g_B  # noqa: E731
    if isinstance(source, tuple):
        # Variables, not constants: tf.data serializes captured constants into its graph (measured:
        # 2 extra copies and 6 s for a 640 MB table; protobuf caps a graph at 2 GB).
        ids_NxL, ws_NxL = (tf.Variable(a, trainable=False) for a in source)
        n = len(source[0])

        def examples(j_B):
            g_B = stream_index(j_B)
            epoch_B = g_B // n

            # Each epoch is its own permutation; a batch spans one or two epochs (more only when
            # the corpus has fewer rows than a batch), each shuffled for the whole batch at once.
            def shuffle_rows(epoch, row_B):
                permuted_B = tf.random.experimental.index_shuffle(
                    g_B % n,
                    seed=tf.stack([tf.constant(seed, tf.int64), -1 - epoch]),
                    max_index=tf.constant(n - 1, tf.int64),
                )
                return epoch + 1, tf.where(epoch_B == epoch, permuted_B, row_B)

            _, row_B = tf.while_loop(
                lambda epoch, _: epoch <= tf.reduce_max(epoch_B),
                shuffle_rows,
                (tf.reduce_min(epoch_B), tf.zeros_like(g_B)),
            )
            return mask_key(g_B), tf.gather(ids_NxL, row_B), tf.gather(ws_NxL, row_B)

        ds = tf.data.Dataset.range(0, np.iinfo(np.int64).max - first).batch(B)
        masked_batch = lambda j_B: masker(*examples(j_B))  # noqa: E731
    else:
        ds = source.repeat().shuffle(cfg.shuffle_buffer, seed=seed).enumerate().skip(first)
        if not own:
            ds = ds.filter(lambda g, ex: ((g - start_example) % G) // B == p)
        ds = ds.batch(B, drop_remainder=True)
        masked_batch = lambda g_B, ex: masker(mask_key(g_B), *ex)  # noqa: E731
    ds = ds.map(masked_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def build_eval_batches(
    cfg: DataConfig,
    tokenizer: Tokenizer,
    *,
    host_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
    """One pass over `eval_files` in order with masks fixed by `EVAL_MASK_SEED` (the same for
    every run seed). Every host gets the same number of batches; rows past the end are
    `[CLS] [SEP]` fillers whose `masked_weights` are all 0."""
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
    masker = make_masker(cfg, tokenizer, EVAL_MASK_SEED)
    ds = tf.data.Dataset.from_tensor_slices((g, rows_ids, rows_ws))
    ds = ds.batch(B).map(masker, num_parallel_calls=tf.data.AUTOTUNE)
    return list(ds.as_numpy_iterator())


def _check_hosts(host_batch_size: int, process_index: int, process_count: int) -> None:
    if host_batch_size < 1:
        raise FlaxlmError(f"host_batch_size={host_batch_size}: must be at least 1")
    if not 0 <= process_index < process_count:
        raise FlaxlmError(
            f"process_index={process_index}: must be in [0, process_count={process_count})")


def _train_source(
    cfg: DataConfig, tokenizer: Tokenizer, shard: tuple[int, int] = (0, 1)
) -> tuple[np.ndarray, np.ndarray] | tf.data.Dataset:
    """Packed train examples (of `shard`'s units): a table in memory when it fits, else a
    tf.data stream."""
    specs = cfg.train_files
    if any(sources.is_prepared(s) for s in specs):
        _require_all_prepared(specs, "train_files")
        dims = {"seq_len": cfg.seq_len, "vocab_size": tokenizer.vocab_size, "shard": shard}
        if sources.prepared_num_examples(specs, shard) * cfg.seq_len <= IN_MEMORY_MAX_TOKENS:
            return sources.load_prepared(specs, **dims)
        return sources.prepared_dataset(specs, **dims)
    if any(s.startswith(sources.TFDS_PREFIX) for s in specs):
        return _packed_stream(specs, tokenizer, cfg.seq_len, cfg.text_field, shard)
    return prepare.pack_corpus(specs, tokenizer, seq_len=cfg.seq_len, text_field=cfg.text_field,
                               shard=shard)


def _in_memory(specs: tuple[str, ...], cfg: DataConfig,
               tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    if any(sources.is_prepared(s) for s in specs):
        _require_all_prepared(specs, "eval_files")
        return sources.load_prepared(specs, seq_len=cfg.seq_len, vocab_size=tokenizer.vocab_size)
    return prepare.pack_corpus(specs, tokenizer, seq_len=cfg.seq_len, text_field=cfg.text_field)


def _require_all_prepared(specs: tuple[str, ...], key: str) -> None:
    raw = [s for s in specs if not sources.is_prepared(s)]
    if raw:
        raise FlaxlmError(
            f"DataConfig.{key}: {raw} are raw text but others are prepared shards; use one kind")


def _packed_stream(
        specs: tuple[str, ...],
        tokenizer: Tokenizer,
        seq_len: int,
        text_field: str,
        shard: tuple[int, int] = (0, 1),
) -> tf.data.Dataset:
    """One epoch of packed examples, tokenized on the fly (tf.data re-runs it on every repeat)."""
    def blocks():
        token_docs = prepare.tokenize_documents(sources.iter_documents(specs, text_field, shard),
                                                tokenizer)
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

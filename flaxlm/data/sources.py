"""Where text comes from: local text files, TFDS datasets, and TFRecord shards written by `prepare`.

A *spec* is what the user writes in `DataConfig.train_files`:
  * a path, a glob, or a directory of corpus files (`flaxlm.data.corpus_files`): Parquet and JSON
    lines, one row a document; text, one paragraph per line, documents separated by a blank line
    (the BERT/ELECTRA data convention); `.gz`/`.zst` compressed or not;
  * `tfds:NAME[:SPLIT]`, e.g. `tfds:wikipedia/20230601.it:train`: the `text` feature is a document,
    its lines are paragraphs;
  * a directory holding `prepared.json`: packed examples written by `flaxlm.data.prepare`.
A document is a list of paragraphs (non-empty strings of at most
`corpus_files.MAX_PARAGRAPH_CHARS`).
TensorFlow and TFDS are imported only where needed: tokenizer training reads plain text and should
not pay seconds of TensorFlow import.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from flaxlm import storage
from flaxlm.data import corpus_files
from flaxlm.errors import FlaxlmError

TFDS_PREFIX = "tfds:"
PREPARED_META = "prepared.json"


def iter_documents(
        specs: Sequence[str],
        text_field: str = corpus_files.DEFAULT_TEXT_FIELD,
        shard: tuple[int, int] = (0, 1),
) -> Iterator[list[str]]:
    """Documents of all specs in order. Bad paths and files that are not a corpus fail here,
    before any reading starts. `text_field` names the Parquet column / JSON field holding the text.

    `shard=(i, n)`: only the units (Parquet row groups, other files whole; `corpus_files`) whose
    position in the listing of all specs is i mod n, so n hosts read disjoint parts of the corpus
    and together all of it. A `tfds:` spec is one unit.
    """
    index, count = shard
    if not 0 <= index < count:
        raise FlaxlmError(f"shard {index}/{count}: expected I/N with 0 <= I < N")
    readers = []
    for spec in specs:
        if is_prepared(spec):
            raise FlaxlmError(f"{spec}: holds prepared shards (packed token ids), not text")
        if spec.startswith(TFDS_PREFIX):
            readers.append((spec, [spec]))
        else:
            readers.append((spec, [corpus_files.identify(p) for p in resolve_text_files(spec)]))
    return _documents(readers, text_field, shard)


def num_units(specs: Sequence[str]) -> int:
    """How many units `iter_documents(specs, shard=...)` deals out: a Parquet file's row groups,
    1 for any other file and for a `tfds:` spec. Reads each file's first bytes (and footer)."""
    total = 0
    for spec in specs:
        if spec.startswith(TFDS_PREFIX):
            total += 1
        else:
            total += sum(
                len(corpus_files.units(corpus_files.identify(p))) for p in resolve_text_files(spec))
    return total


def _documents(readers: list[tuple[str, list]], text_field: str,
               shard: tuple[int, int]) -> Iterator[list[str]]:
    index, count = shard
    position = 0
    for spec, files in readers:
        found_text = False
        for file in files:
            if isinstance(file, str):  # tfds: one unit
                parts = [_tfds_documents(file)] if position % count == index else []
                position += 1
            else:
                # Listing row groups reads a Parquet footer: only worth it when sharding.
                whole = [corpus_files.Unit(file)] if count == 1 else corpus_files.units(file)
                mine = []
                for unit in whole:
                    if position % count == index:
                        mine.append(unit)
                    position += 1
                parts = (corpus_files.documents(u, text_field) for u in mine)
            for docs in parts:
                for doc in docs:
                    found_text = True
                    yield doc
        # With n > 1 a host may own no unit of a small spec; emptiness is for one reader to say.
        if not found_text and count == 1:
            raise FlaxlmError(f"{spec}: no text found (the corpus is empty or all blank lines)")


def resolve_text_files(spec: str) -> list[str]:
    """The files a path/glob/directory spec names, sorted so that reading order is reproducible."""
    if glob.has_magic(spec):
        paths = storage.glob(spec)
        if not paths:
            raise FlaxlmError(f"{spec}: the pattern matches no files")
        return paths
    if storage.isdir(spec):
        paths = sorted(
            os.path.join(spec, name) for name in storage.listdir(spec)
            if not name.startswith(".") and storage.isfile(os.path.join(spec, name)))
        if not paths:
            raise FlaxlmError(f"{spec}: the directory holds no files")
        return paths
    if not storage.isfile(spec):
        raise FlaxlmError(f"{spec}: no such file")
    return [spec]


def parse_tfds_spec(spec: str) -> tuple[str, str]:
    """`tfds:NAME[:SPLIT]` -> (NAME, SPLIT); the split defaults to train."""
    name, _, split = spec[len(TFDS_PREFIX):].partition(":")
    if not name:
        raise FlaxlmError(
            f"{spec}: expected tfds:NAME[:SPLIT], e.g. tfds:wikipedia/20230601.it:train")
    return name, split or "train"


def _tfds_documents(spec: str) -> Iterator[list[str]]:
    import tensorflow_datasets as tfds  # seconds to import: only for a tfds: source

    name, split = parse_tfds_spec(spec)
    try:
        ds = tfds.load(name, split=split, shuffle_files=False)
    except Exception as e:  # tfds raises many types (not found, not prepared, bad split)
        raise FlaxlmError(
            f"{spec}: cannot load with tensorflow_datasets: {str(e).splitlines()[0]}") from e
    if "text" not in ds.element_spec:
        raise FlaxlmError(f"{spec}: has no 'text' feature (features: {sorted(ds.element_spec)})")
    for example in ds.as_numpy_iterator():
        text = example["text"].decode("utf-8", errors="replace").replace("\x00", "")
        paragraphs = [
            p for line in text.split("\n") for p in corpus_files.split_long_text(line.strip())
        ]
        if paragraphs:
            yield paragraphs


# --- prepared shards ----------------------------------------------------------------------------


def is_prepared(spec: str) -> bool:
    return storage.isfile(os.path.join(spec, PREPARED_META))


def read_prepared_meta(spec: str) -> dict:
    meta_path = os.path.join(spec, PREPARED_META)
    try:
        meta = json.loads(storage.read_text(meta_path))
    except (OSError, json.JSONDecodeError) as e:
        raise FlaxlmError(f"{meta_path}: not valid prepared-shard metadata ({e!r})") from e
    missing = [key for key in ("seq_len", "vocab_size", "files", "num_examples") if key not in meta]
    if missing:
        raise FlaxlmError(f"{meta_path}: keys {missing} are missing")
    for name in meta["files"]:
        if not storage.isfile(os.path.join(spec, name)):
            raise FlaxlmError(
                f"{meta_path}: lists {name} but {os.path.join(spec, name)} does not exist")
    return meta


def prepared_dataset(specs: Sequence[str], *, seq_len: int, vocab_size: int,
                     shard: tuple[int, int] = (0, 1)):
    """A tf.data.Dataset of packed `(ids_L int32, word_starts_L bool)` in packing order.

    `shard=(i, n)`: only the shard files whose position in the listing of all specs' files is
    i mod n (each file is a unit, as a Parquet row group is for `iter_documents`)."""
    import tensorflow as tf  # seconds to import: only when a tf.data stream is built

    records = None
    for spec, own in _prepared_files(specs, shard, seq_len=seq_len, vocab_size=vocab_size):
        if not own:
            continue
        paths = [path for path, _ in own]
        # `prepare` deals example i to shard i % S; reading the shards round-robin restores packing
        # order, so prepared shards and the text they came from give the same training stream.
        spec_records = tf.data.Dataset.from_tensor_slices(paths).interleave(
            tf.data.TFRecordDataset, cycle_length=len(paths), block_length=1)
        records = spec_records if records is None else records.concatenate(spec_records)
    if records is None:
        raise FlaxlmError(f"{', '.join(specs)}: no shard file at position {shard[0]} "
                          f"mod {shard[1]} (the directories hold fewer files)")
    features = {
        "input_ids": tf.io.FixedLenFeature([seq_len], tf.int64),
        "word_starts": tf.io.FixedLenFeature([seq_len], tf.int64),
    }

    def parse(records_N):
        ex = tf.io.parse_example(records_N, features)
        return tf.cast(ex["input_ids"], tf.int32), tf.cast(ex["word_starts"], tf.bool)

    # Parse many records per call: per-record parsing is dominated by op overhead.
    return records.batch(1024).map(parse).unbatch()


def load_prepared(
    specs: Sequence[str], *, seq_len: int, vocab_size: int,
    shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
    """All packed examples (of `shard`'s files) in memory: `ids_NxL` int32, `word_starts_NxL` bool."""
    ds = prepared_dataset(specs, seq_len=seq_len, vocab_size=vocab_size, shard=shard).batch(8192)
    ids, word_starts = [], []
    for ids_KxL, word_starts_KxL in ds.as_numpy_iterator():
        ids.append(ids_KxL)
        word_starts.append(word_starts_KxL)
    if not ids:
        raise FlaxlmError(f"{', '.join(specs)}: the prepared shards hold no examples")
    return np.concatenate(ids), np.concatenate(word_starts)


def prepared_num_examples(specs: Sequence[str], shard: tuple[int, int] = (0, 1)) -> int:
    return sum(count for _, own in _prepared_files(specs, shard) for _, count in own)


def prepared_num_files(specs: Sequence[str]) -> int:
    """How many units `shard=(i, n)` deals out: every shard file of every prepared spec."""
    return sum(len(read_prepared_meta(spec)["files"]) for spec in specs)


def _prepared_files(specs: Sequence[str], shard: tuple[int, int], *, seq_len: int = 0,
                    vocab_size: int = 0) -> list[tuple[str, list[tuple[str, int]]]]:
    """Per spec, its files at positions i mod n of the listing of all specs' files, each with
    its example count; `seq_len`/`vocab_size` (when given) must be what the spec was packed for."""
    index, count = shard
    if not 0 <= index < count:
        raise FlaxlmError(f"shard {index}/{count}: expected I/N with 0 <= I < N")
    position, chosen = 0, []
    for spec in specs:
        meta = read_prepared_meta(spec)
        for key, want in (("seq_len", seq_len), ("vocab_size", vocab_size)):
            if want and meta[key] != want:
                raise FlaxlmError(f"{os.path.join(spec, PREPARED_META)}: {key}={meta[key]} "
                                  f"but {want} is configured")
        own = []
        for name, examples in zip(meta["files"], meta["num_examples"]):
            if position % count == index:
                own.append((os.path.join(spec, name), examples))
            position += 1
        chosen.append((spec, own))
    return chosen

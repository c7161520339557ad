"""Tokenize and pack documents into fixed-length examples; optionally write them as TFRecord shards.

Packing follows RoBERTa's FULL-SENTENCES format: the token stream of all documents, with `[SEP]`
between documents, is cut into chunks of `seq_len - 2` tokens and each chunk becomes
`[CLS] chunk [SEP]`; only the very last example is padded. The first token of every chunk counts
as a word start, so whole-word masking never sees half a word without its head.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf
import tqdm

from flaxlm import storage
from flaxlm.data import sources
from flaxlm.data.tokenizers import Tokenizer
from flaxlm.errors import FlaxlmError

# Documents per `encode_batch` call and examples per packed block: large enough to amortize the
# native calls, small enough to stream corpora that do not fit in memory.
DOCS_PER_ENCODE = 256
EXAMPLES_PER_BLOCK = 4096


def tokenize_documents(documents: Iterable[list[str]],
                       tokenizer: Tokenizer) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per document: its paragraphs' `(ids_T int32, word_starts_T bool)` concatenated."""
    batch: list[list[str]] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) == DOCS_PER_ENCODE:
            yield from _tokenize_batch(batch, tokenizer)
            batch = []
    if batch:
        yield from _tokenize_batch(batch, tokenizer)


def _tokenize_batch(docs: list[list[str]],
                    tokenizer: Tokenizer) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    encoded = tokenizer.encode_batch([p for doc in docs for p in doc])
    start = 0
    for doc in docs:
        parts = encoded[start:start + len(doc)]
        start += len(doc)
        yield np.concatenate([ids for ids, _ in parts]), np.concatenate([ws for _, ws in parts])


def pack_examples(
    token_docs: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    seq_len: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    examples_per_block: int = EXAMPLES_PER_BLOCK,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blocks of packed examples `(ids_NxL int32, word_starts_NxL bool)`, streaming."""
    body = seq_len - 2
    sep_T, no_start_T = np.array([sep_id], np.int32), np.zeros(1, bool)
    pending_ids: list[np.ndarray] = []
    pending_ws: list[np.ndarray] = []
    pending = 0
    first_doc = True
    for ids_T, ws_T in token_docs:
        if not len(ids_T):
            continue
        if not first_doc:
            pending_ids.append(sep_T)
            pending_ws.append(no_start_T)
            pending += 1
        first_doc = False
        pending_ids.append(ids_T)
        pending_ws.append(ws_T)
        pending += len(ids_T)
        if pending >= body * examples_per_block:
            stream_ids, stream_ws = np.concatenate(pending_ids), np.concatenate(pending_ws)
            n = len(stream_ids) // body
            yield _frame(stream_ids[:n * body], stream_ws[:n * body], seq_len, cls_id, sep_id,
                         pad_id)
            pending_ids, pending_ws = [stream_ids[n * body:]], [stream_ws[n * body:]]
            pending = len(pending_ids[0])
    if pending:
        stream_ids, stream_ws = np.concatenate(pending_ids), np.concatenate(pending_ws)
        yield _frame(stream_ids, stream_ws, seq_len, cls_id, sep_id, pad_id)


def _frame(
    stream_ids: np.ndarray,
    stream_ws: np.ndarray,
    seq_len: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Cuts a token stream into `[CLS] chunk [SEP] pad…` rows; only the last row may be short."""
    body = seq_len - 2
    n = -(-len(stream_ids) // body)
    tail = len(stream_ids) - (n - 1) * body
    ids_NxB = np.full((n, body), pad_id, np.int32)
    ws_NxB = np.zeros((n, body), bool)
    ids_NxB.reshape(-1)[:len(stream_ids)] = stream_ids
    ws_NxB.reshape(-1)[:len(stream_ws)] = stream_ws
    ws_NxB[:, 0] |= ids_NxB[:, 0] != sep_id
    ids_NxL = np.full((n, seq_len), pad_id, np.int32)
    ids_NxL[:, 0] = cls_id
    ids_NxL[:, 1:-1] = ids_NxB
    ids_NxL[:, -1] = sep_id
    if tail < body:  # the short last row: its SEP follows its last token
        ids_NxL[-1, -1] = pad_id
        ids_NxL[-1, tail + 1] = sep_id
    ws_NxL = np.zeros((n, seq_len), bool)
    ws_NxL[:, 1:-1] = ws_NxB
    return ids_NxL, ws_NxL


def pack_corpus(
        specs: Sequence[str],
        tokenizer: Tokenizer,
        *,
        seq_len: int,
        text_field: str = "text",
        shard: tuple[int, int] = (0, 1),
) -> tuple[np.ndarray, np.ndarray]:
    """All packed examples of corpus/TFDS specs in memory (for corpora that fit, else use
    `prepare_shards`); with `shard=(i, n)`, of the units at positions i mod n only
    (`sources.iter_documents`)."""
    blocks = list(
        pack_examples(
            tokenize_documents(sources.iter_documents(specs, text_field, shard), tokenizer),
            seq_len=seq_len,
            cls_id=tokenizer.cls_id,
            sep_id=tokenizer.sep_id,
            pad_id=tokenizer.pad_id,
        ))
    if not blocks:
        part = f" (its units at positions {shard[0]} mod {shard[1]})" if shard[1] > 1 else ""
        raise FlaxlmError(f"{', '.join(specs)}{part}: the text yields no tokens")
    return np.concatenate([ids for ids, _ in blocks]), np.concatenate([ws for _, ws in blocks])


def prepare_shards(
    input_files: Sequence[str],
    tokenizer: Tokenizer,
    out_dir: str,
    *,
    seq_len: int,
    num_shards: int,
    text_field: str = "text",
) -> dict:
    """Tokenizes + packs `input_files` offline into `out_dir/shard-XXXXX-of-YYYYY.tfrecord`.

    Example i goes to shard i % num_shards. `prepared.json` is written last, so a directory from an
    interrupted run is never taken for a finished one. Returns that metadata.
    """
    if seq_len < 8:
        raise FlaxlmError(f"seq_len={seq_len}: must be at least 8")
    if num_shards < 1:
        raise FlaxlmError(f"num_shards={num_shards}: must be at least 1")
    storage.makedirs(out_dir)
    meta_path = os.path.join(out_dir, sources.PREPARED_META)
    if storage.exists(meta_path):
        storage.remove(meta_path)
    names = [f"shard-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(out_dir, name)) for name in names]
    counts = [0] * num_shards
    total = 0
    documents = tqdm.tqdm(sources.iter_documents(input_files, text_field), desc="prepare",
                          unit="doc")
    token_docs = tokenize_documents(documents, tokenizer)
    try:
        for ids_NxL, ws_NxL in pack_examples(
                token_docs,
                seq_len=seq_len,
                cls_id=tokenizer.cls_id,
                sep_id=tokenizer.sep_id,
                pad_id=tokenizer.pad_id,
        ):
            for ids_L, ws_L in zip(ids_NxL, ws_NxL):
                shard = total % num_shards
                writers[shard].write(_serialize(ids_L, ws_L))
                counts[shard] += 1
                total += 1
    finally:
        for writer in writers:
            writer.close()
    if not total:
        raise FlaxlmError(f"{', '.join(input_files)}: the text yields no tokens")
    meta = {
        # A gs:// tokenizer by its gs:// name, not by its download (removed at exit).
        "tokenizer": storage.recorded_name(tokenizer.path),
        "seq_len": seq_len,
        "vocab_size": tokenizer.vocab_size,
        "files": names,
        "num_examples": counts,
        "inputs": list(input_files),
        "text_field": text_field,
    }
    storage.write_text(meta_path, json.dumps(meta, indent=2))
    return meta


def _serialize(ids_L: np.ndarray, ws_L: np.ndarray) -> bytes:
    feature = {
        "input_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=ids_L.tolist())),
        "word_starts": tf.train.Feature(int64_list=tf.train.Int64List(
            value=ws_L.astype(np.int64).tolist())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

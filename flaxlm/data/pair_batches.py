"""Texts and text pairs → fixed-shape classification batches, as transformers' tokenizers build them.

Layout by tokenizer family, so a model trained here sees what its exported tokenizer produces:
  * wordpiece (BERT, ELECTRA): `[CLS] a [SEP]` / `[CLS] a [SEP] b [SEP]`, token types 0 for
    `[CLS] a [SEP]` and 1 for `b [SEP]`; for a model without token types (DistilBERT,
    `token_types=False`) the same ids with token types all 0, as DistilBERT's tokenizers give
    no token_type_ids and its model reads none (the segments are told apart by [SEP] alone);
  * sentencepiece (XLM-R): `<s> a </s>` / `<s> a </s></s> b </s>`, token types all 0.
A pair longer than `seq_len` is cut like transformers' `truncation="longest_first"`: the shorter
segment keeps at most half of the room, the longer one the rest (on a tie the second segment
gets the odd token). Truncated examples are counted, never silently.

Batch keys: `input_ids`, `attention_mask`, `token_type_ids` [B, L] int32 (L: the length bucket
of the global batch, flaxlm/data/length_buckets.py), `labels` [B] int32
(`pairs.UNKNOWN_LABEL` for a label the training data lacks), `weights` [B] float32 (0 for the
rows that pad the last evaluation batch).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import numpy as np

from flaxlm.data import length_buckets
from flaxlm.data.pairs import UNKNOWN_LABEL, Example
from flaxlm.data.tokenizers import Tokenizer
from flaxlm.errors import FlaxlmError

ROW_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class Encoded(NamedTuple):
    rows: dict[str, np.ndarray]  # ROW_KEYS [N, L] and labels [N]
    truncated: int  # examples cut to fit seq_len


def truncated_lengths(len_a: int, len_b: int, room: int,
                      strategy: str = "longest_first") -> tuple[int, int]:
    """Lengths kept of two segments sharing `room` tokens, as transformers' truncation strategy
    `longest_first` or `only_first` (zero-shot: the hypothesis is never cut) keeps them."""
    if len_a + len_b <= room:
        return len_a, len_b
    if strategy == "only_first":
        return max(room - len_b, 0), len_b
    a_first = len_a <= len_b
    short, long = (len_a, len_b) if a_first else (len_b, len_a)
    short = min(short, room // 2)
    long = min(long, room - short)
    return (short, long) if a_first else (long, short)


def special_tokens(tokenizer: Tokenizer, paired: bool) -> int:
    if not paired:
        return 2
    return 4 if tokenizer.kind == "sentencepiece" else 3


def encode(tokenizer: Tokenizer, examples: Sequence[Example], seq_len: int, label_ids: dict[str,
                                                                                            int],
           truncation: str = "longest_first", token_types: bool = True) -> Encoded:
    """`token_types`: whether the model reads token types (model.type_vocab_size > 0)."""
    paired = examples[0].text_pair is not None
    first = [ids for ids, _ in tokenizer.encode_batch([e.text for e in examples])]
    second = ([ids for ids, _ in tokenizer.encode_batch([e.text_pair for e in examples])]
              if paired else [np.zeros(0, np.int32)] * len(examples))
    room = seq_len - special_tokens(tokenizer, paired)
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    # XLM-R separates the segments with two </s>; BERT with one [SEP] and a token-type switch;
    # DistilBERT with one [SEP] alone.
    middle = [sep, sep] if tokenizer.kind == "sentencepiece" else [sep]
    second_type = int(tokenizer.kind == "wordpiece" and token_types)
    ids_NxL = np.full((len(examples), seq_len), tokenizer.pad_id, np.int32)
    types_NxL = np.zeros((len(examples), seq_len), np.int32)
    lengths_N = np.zeros(len(examples), np.int64)
    truncated = 0
    for row, (a, b) in enumerate(zip(first, second)):
        keep_a, keep_b = truncated_lengths(len(a), len(b), room, truncation)
        truncated += (keep_a, keep_b) != (len(a), len(b))
        if keep_a + keep_b > room:
            raise FlaxlmError(f"example {row}: its second text alone has {len(b)} tokens, more "
                              f"than the {room} that data.seq_len={seq_len} leaves")
        head = [cls, *a[:keep_a], *middle] if paired else [cls, *a[:keep_a], sep]
        tail = [*b[:keep_b], sep] if paired else []
        ids_NxL[row, :len(head) + len(tail)] = head + tail
        types_NxL[row, len(head):len(head) + len(tail)] = second_type
        lengths_N[row] = len(head) + len(tail)
    mask_NxL = (np.arange(seq_len) < lengths_N[:, None]).astype(np.int32)
    labels_N = np.asarray([label_ids.get(e.label, UNKNOWN_LABEL) for e in examples], np.int32)
    return Encoded(
        {
            "input_ids": ids_NxL,
            "attention_mask": mask_NxL,
            "token_type_ids": types_NxL,
            "labels": labels_N
        }, truncated)


def _take(rows: dict[str, np.ndarray], index_B: np.ndarray, weights_B: np.ndarray,
          length: int) -> dict:
    batch = {**{k: v[index_B] for k, v in rows.items()}, "weights": weights_B.astype(np.float32)}
    return length_buckets.cut(batch, length, ROW_KEYS)


def _bucket(rows: dict[str, np.ndarray], index_G: np.ndarray, buckets: Sequence[int]) -> int:
    """The length bucket of the global batch `index_G` (the same on every process)."""
    longest = int(np.max(length_buckets.row_lengths(rows["attention_mask"][index_G])))
    return length_buckets.bucket_length(longest, buckets or (rows["input_ids"].shape[1], ))


def train_stream(
    rows: dict[str, np.ndarray], *, seed: int, host_batch_size: int, start_example: int,
    process_index: int = 0, process_count: int = 1,
    buckets: Sequence[int] = ()) -> Iterator[dict[str, np.ndarray]]:
    """Endless host batches. Global example g is row `perm_e[g mod N]` with a fresh permutation
    per epoch e = g // N (seeded by (seed, e)); global batch k holds examples
    [start + k·G, start + (k+1)·G) with G = B × processes, host p the p-th B of them, cut to the
    length bucket of the global batch's longest row. So a batch depends only on (seed, its
    first example), and resuming at any example replays it."""
    n = len(rows["labels"])
    global_batch = host_batch_size * process_count
    perms: dict[int, np.ndarray] = {}
    first = start_example
    mine = slice(process_index * host_batch_size, (process_index + 1) * host_batch_size)
    ones_B = np.ones(host_batch_size, np.float32)
    while True:
        g_G = first + np.arange(global_batch)
        epochs_G = g_G // n
        perms = {
            e: perms[e] if e in perms else np.random.default_rng([seed, e]).permutation(n)
            for e in set(epochs_G.tolist())
        }
        index_G = np.asarray([perms[e][g % n] for e, g in zip(epochs_G, g_G)])
        yield _take(rows, index_G[mine], ones_B, _bucket(rows, index_G, buckets))
        first += global_batch


def eval_batches(
    rows: dict[str, np.ndarray], *, host_batch_size: int, process_index: int = 0,
    process_count: int = 1, buckets: Sequence[int] = ()) -> list[dict[str, np.ndarray]]:
    """Every example once, in order; the last global batch is filled with weight-0 copies of
    row 0 (real tokens, so no row is all padding)."""
    n = len(rows["labels"])
    global_batch = host_batch_size * process_count
    batches = []
    for start in range(0, n, global_batch):
        g_G = start + np.arange(global_batch)
        index_G = np.where(g_G < n, g_G, 0)
        mine = slice(process_index * host_batch_size, (process_index + 1) * host_batch_size)
        batches.append(_take(rows, index_G[mine], (g_G < n)[mine], _bucket(rows, index_G, buckets)))
    return batches

"""Word-labelled sentences → fixed-length rows for token classification, and rows → batches.

Each word is encoded on its own (`Tokenizer.encode_batch` over the words), so a sub-token can
only belong to its word; a word that encodes to nothing becomes one `unk`. A word's label sits on
its first sub-token; the other sub-tokens, CLS, SEP and padding have weight 0 (as transformers'
examples do with label -100).

A sentence longer than `seq_len - 2` tokens is split into windows of `seq_len - 2` tokens that
start every half window (the last one ends at the sentence end), and each word is labelled and
predicted in exactly one window: the one where its first sub-token is most central. So training
sees every word once and evaluation predicts every word once; nothing is truncated.

Rows carry, besides the model inputs: `labels` and `label_weights` (0 for a label the training
data never had: seen only in eval, it scores as an error but adds no loss), `word_index` (the
word a first sub-token stands for, -1 elsewhere) and `sentence` (-1 for filler rows), with which
predictions are mapped back to words.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from flaxlm.data.labelled import Sentence
from flaxlm.data.tokenizers import Tokenizer


@dataclasses.dataclass(frozen=True)
class Rows:
    input_ids_NxL: np.ndarray  # int32, CLS … SEP then padding
    labels_NxL: np.ndarray  # int32 label ids at owned first sub-tokens, 0 elsewhere
    label_weights_NxL: np.ndarray  # float32, 1 where a known label is trained and scored
    word_index_NxL: np.ndarray  # int32 word index at owned first sub-tokens, -1 elsewhere
    sentence_N: np.ndarray  # int32 sentence index of each row
    split_sentences: int  # sentences that needed more than one window

    def __len__(self) -> int:
        return len(self.sentence_N)


def window_starts(num_tokens: int, width: int) -> list[int]:
    """Starts of windows of `width` tokens every half window, the last ending at the end."""
    if num_tokens <= width:
        return [0]
    stride = max(width // 2, 1)
    return list(range(0, num_tokens - width, stride)) + [num_tokens - width]


def owning_window(positions: np.ndarray, starts: Sequence[int], width: int) -> np.ndarray:
    """For each token position, the window (index into `starts`) where it is most central;
    ties go to the earlier window."""
    starts_W = np.asarray(starts)[:, None]
    inside_WxT = (positions >= starts_W) & (positions < starts_W + width)
    distance_WxT = np.where(inside_WxT, np.abs(positions - (starts_W + (width - 1) / 2)), np.inf)
    return np.argmin(distance_WxT, axis=0)


def encode_rows(sentences: Sequence[Sentence], tokenizer: Tokenizer, label_ids: Mapping[str, int],
                seq_len: int) -> Rows:
    width = seq_len - 2
    words = [w for s in sentences for w in s.words]
    encoded = tokenizer.encode_batch(words) if words else []
    ids, labels, weights, word_index, sentence_ids = [], [], [], [], []
    split = 0
    cursor = 0
    for sentence_id, sentence in enumerate(sentences):
        pieces = [
            ids if len(ids) else np.asarray([tokenizer.unk_id], np.int32)
            for ids, _ in encoded[cursor:cursor + len(sentence.words)]
        ]
        cursor += len(sentence.words)
        lengths = np.array([len(p) for p in pieces])
        ids_T = np.concatenate(pieces).astype(np.int32)
        first_W = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # first sub-token of each word
        label_W = np.array([label_ids.get(label, -1) for label in sentence.labels])
        starts = window_starts(len(ids_T), width)
        split += len(starts) > 1
        owner_W = owning_window(first_W, starts, width)
        for w, start in enumerate(starts):
            row_ids = np.full(seq_len, tokenizer.pad_id, np.int32)
            chunk = ids_T[start:start + width]
            row_ids[0], row_ids[1:1 + len(chunk)], row_ids[1 + len(chunk)] = (tokenizer.cls_id,
                                                                              chunk,
                                                                              tokenizer.sep_id)
            owned = np.flatnonzero(owner_W == w)
            columns = 1 + first_W[owned] - start
            row_labels = np.zeros(seq_len, np.int32)
            row_weights = np.zeros(seq_len, np.float32)
            row_words = np.full(seq_len, -1, np.int32)
            row_labels[columns] = np.maximum(label_W[owned], 0)
            row_weights[columns] = label_W[owned] >= 0
            row_words[columns] = owned
            ids.append(row_ids)
            labels.append(row_labels)
            weights.append(row_weights)
            word_index.append(row_words)
            sentence_ids.append(sentence_id)
    return Rows(np.stack(ids), np.stack(labels), np.stack(weights), np.stack(word_index),
                np.asarray(sentence_ids, np.int32), split)


def batch_of(rows: Rows, index_B: np.ndarray, tokenizer: Tokenizer) -> dict[str, np.ndarray]:
    """The rows at `index_B`; an index of -1 is a filler row ([CLS] [SEP], nothing labelled)."""
    real_B = index_B >= 0
    take_B = np.where(real_B, index_B, 0)
    seq_len = rows.input_ids_NxL.shape[1]
    filler_L = np.full(seq_len, tokenizer.pad_id, np.int32)
    filler_L[:2] = tokenizer.cls_id, tokenizer.sep_id
    input_ids = np.where(real_B[:, None], rows.input_ids_NxL[take_B], filler_L)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != tokenizer.pad_id).astype(np.int32),
        "token_type_ids": np.zeros_like(input_ids),
        "labels": np.where(real_B[:, None], rows.labels_NxL[take_B], 0),
        "label_weights": np.where(real_B[:, None], rows.label_weights_NxL[take_B],
                                  0.0).astype(np.float32),
        "word_index": np.where(real_B[:, None], rows.word_index_NxL[take_B], -1),
        "sentence": np.where(real_B, rows.sentence_N[take_B], -1).astype(np.int32),
    }

"""A tokenizer directory's file names and the loaded `Tokenizer` every backend returns.

The backends (`tokenizers.py` for SentencePiece and WordPiece model files, `tokenizer_json.py`
for a directory that ships only `tokenizer.json`) all build this one type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

META_FILE = "flaxlm_tokenizer.json"
SP_MODEL_FILE = "sentencepiece.bpe.model"
VOCAB_FILE = "vocab.txt"
TOKENIZER_JSON = "tokenizer.json"
MODEL_MAX_LENGTH = 512


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A loaded tokenizer; `encode_batch` is the only hot path."""

    kind: str  # "sentencepiece" | "wordpiece"
    vocab_size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int
    special_ids: tuple[int, ...]
    lowercase: bool
    strip_accents: bool
    # The local directory read: a `gs://` tokenizer's download, which is removed at exit, so
    # records name it by `storage.recorded_name(path)`.
    path: str
    # texts -> [(ids int32, word starts bool)], one backend per model file (see the loaders).
    _encode: Callable[[list[str]],
                      list[tuple[np.ndarray,
                                 np.ndarray]]] = dataclasses.field(repr=False, compare=False)

    def encode_batch(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Token ids (int32) and word-start flags (bool) per text, without CLS/SEP."""
        return self._encode(list(texts))


# XLM-R's special tokens as transformers names them (special_tokens_map.json, tokenizer_config).
XLMR_SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>"
}

"""`tokenizer.json`, the `tokenizers` library's file, as a flaxlm tokenizer backend.

Every flaxlm tokenizer directory carries one, written as transformers builds it, so a tokenizer
(and an export) loads with `tokenizers` alone. A directory imported from a checkpoint that ships
only `tokenizer.json` has no SentencePiece or WordPiece model file: flaxlm then encodes with this
file, reading word starts from the pre-tokenizer's words as transformers' `word_ids()` does.
"""

from __future__ import annotations

import os

import numpy as np
from tokenizers import Tokenizer as HfTokenizer

from flaxlm.data.tokenizer_dir import META_FILE, TOKENIZER_JSON, Tokenizer
from flaxlm.errors import FlaxlmError

_TOKENIZERS_MODEL = {"sentencepiece": "Unigram", "wordpiece": "WordPiece"}


def load_tokenizer_json(path: str, meta: dict, kind: str) -> Tokenizer:
    """A tokenizer kept only as `tokenizer.json` (imported from a checkpoint that ships nothing
    else). Word starts are where the pre-tokenizer's words begin, as `word_ids()` reports them in
    transformers, so whole-word masking sees the words the checkpoint's own tokenizer sees."""
    file = os.path.join(path, TOKENIZER_JSON)
    try:
        backend = HfTokenizer.from_file(file)
    except Exception as e:  # the Rust extension raises a bare Exception for malformed files
        raise FlaxlmError(f"{file}: not a readable tokenizers file ({e})") from None
    model_type = type(backend.model).__name__
    if model_type != _TOKENIZERS_MODEL[kind]:
        raise FlaxlmError(f"{file}: holds a {model_type} model but {META_FILE} says kind {kind!r} "
                          f"(a {_TOKENIZERS_MODEL[kind]} model)")
    # Packing needs whole paragraphs: a length limit saved in the file would cut them.
    backend.no_truncation()
    backend.no_padding()
    vocab_size = backend.get_vocab_size(with_added_tokens=True)
    if sorted(backend.get_vocab(with_added_tokens=True).values()) != list(range(vocab_size)):
        raise FlaxlmError(f"{file}: token ids are not exactly 0..{vocab_size - 1}")
    special = meta.get("special_ids")
    names = ("cls", "pad", "sep", "unk", "mask")
    if not isinstance(special, dict) or not all(
            isinstance(special.get(n), int) and 0 <= special[n] < vocab_size for n in names):
        raise FlaxlmError(
            f"{os.path.join(path, META_FILE)}: key 'special_ids' must give {', '.join(names)} "
            f"ids below {vocab_size}")

    def encode(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for enc in backend.encode_batch(texts, add_special_tokens=False):
            # A token outside any word (None) becomes NaN, unequal to its neighbours: a word.
            word_N = np.array(enc.word_ids, dtype=np.float64)
            word_start_N = np.ones(word_N.shape, dtype=bool)
            word_start_N[1:] = word_N[1:] != word_N[:-1]
            out.append((np.array(enc.ids, dtype=np.int32), word_start_N))
        return out

    return Tokenizer(
        kind=kind,
        vocab_size=vocab_size,
        pad_id=special["pad"],
        cls_id=special["cls"],
        sep_id=special["sep"],
        mask_id=special["mask"],
        unk_id=special["unk"],
        special_ids=tuple(sorted({special[n]
                                  for n in names})),
        lowercase=bool(meta.get("lowercase", False)),
        strip_accents=bool(meta.get("strip_accents", False)),
        path=path,
        _encode=encode,
    )


def write_tokenizer_json(out_dir: str) -> None:
    """`tokenizer.json` as transformers builds it from the files just written: the directory then
    also loads with the `tokenizers` library alone, giving the same ids."""
    from transformers import AutoTokenizer  # seconds to import: only when training

    backend = AutoTokenizer.from_pretrained(out_dir, local_files_only=True).backend_tokenizer
    backend.save(os.path.join(out_dir, TOKENIZER_JSON))

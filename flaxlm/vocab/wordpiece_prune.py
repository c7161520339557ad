"""A pruned (and optionally uncased) WordPiece vocabulary.

WordPiece takes the longest vocabulary entry at each point of a word; dropping entries that a
word's tokenization did not use leaves that tokenization unchanged. Uncasing lowercases every
entry and turns on the BERT normalizer's lowercasing (accents stay as the source had them).
"""

from __future__ import annotations

import hashlib
import os

from flaxlm.data.tokenizers import VOCAB_FILE, Tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.vocab.vocabulary import Vocabulary


def _read_lines(tokenizer_dir: str) -> list[str]:
    path = os.path.join(tokenizer_dir, VOCAB_FILE)
    if not os.path.isfile(path):
        raise FlaxlmError(f"{tokenizer_dir}: no {VOCAB_FILE}; pruning edits the WordPiece "
                          "vocabulary itself (a tokenizer kept only as tokenizer.json cannot be "
                          "pruned)")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")  # "\n" only, as transformers splits it
    return lines[:-1] if lines and not lines[-1] else lines


def read_vocabulary(tokenizer_dir: str, tok: Tokenizer) -> Vocabulary:
    pieces = tuple(_read_lines(tokenizer_dir))
    fixed = frozenset(tok.special_ids)
    uncased = tuple(p if i in fixed else p.lower() for i, p in enumerate(pieces))
    with open(os.path.join(tokenizer_dir, VOCAB_FILE), "rb") as f:
        fingerprint = hashlib.sha256(f.read()).hexdigest()
    return Vocabulary("wordpiece", pieces, fixed, frozenset(), uncased, fingerprint)


def normalize_chars(tok: Tokenizer, chars: str, uncase: bool) -> set[str]:
    """The characters the (uncased) BERT normalizer makes of `chars`."""
    from flaxlm.data.tokenizers import _bert_pipeline

    normalizer = _bert_pipeline(None, lowercase=tok.lowercase or uncase,
                                strip_accents=tok.strip_accents).normalizer
    return {c for text in (normalizer.normalize_str(c) for c in chars) for c in text
            if not c.isspace()}


def write_vocab(out_dir: str, pieces: tuple[str, ...]) -> None:
    with open(os.path.join(out_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
        f.writelines(p + "\n" for p in pieces)

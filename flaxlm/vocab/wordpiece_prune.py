"""A pruned (and optionally uncased) WordPiece vocabulary.

WordPiece takes the longest vocabulary entry at each point of a word; dropping entries that a
word's tokenization did not use leaves that tokenization unchanged. Uncasing lowercases every
entry and turns on the BERT normalizer's lowercasing (accents stay as the source had them).
"""

from __future__ import annotations

import hashlib
import json
import os

from flaxlm.data.tokenizers import TOKENIZER_JSON, VOCAB_FILE, Tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.vocab.vocabulary import Vocabulary


def _source_file(tokenizer_dir: str) -> str:
    for name in (VOCAB_FILE, TOKENIZER_JSON):
        if os.path.isfile(os.path.join(tokenizer_dir, name)):
            return os.path.join(tokenizer_dir, name)
    raise FlaxlmError(f"{tokenizer_dir}: neither {VOCAB_FILE} nor {TOKENIZER_JSON}; pruning edits "
                      "the tokenizer's vocabulary and needs one of them")


def _read_lines(tokenizer_dir: str) -> list[str]:
    """The vocabulary by id: vocab.txt, else the WordPiece model of a tokenizer.json (which the
    pruned tokenizer then writes as vocab.txt: transformers' BERT tokenizers rebuild their
    pipeline from the vocabulary and tokenizer_config.json's flags either way)."""
    path = _source_file(tokenizer_dir)
    if path.endswith(TOKENIZER_JSON):
        with open(path, encoding="utf-8") as f:
            model = json.load(f).get("model") or {}
        vocab = model.get("vocab")
        if model.get("type") != "WordPiece" or not isinstance(vocab, dict):
            raise FlaxlmError(f"{path}: a {model.get('type')} model; a WordPiece vocabulary is "
                              "read from a WordPiece tokenizer.json")
        if model.get("continuing_subword_prefix", "##") != "##":
            raise FlaxlmError(f"{path}: continuing_subword_prefix "
                              f"{model['continuing_subword_prefix']!r}; BERT's vocab.txt uses '##'")
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise FlaxlmError(f"{path}: WordPiece ids are not exactly 0..{len(vocab) - 1}")
        return sorted(vocab, key=vocab.__getitem__)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")  # "\n" only, as transformers splits it
    return lines[:-1] if lines and not lines[-1] else lines


def read_vocabulary(tokenizer_dir: str, tok: Tokenizer) -> Vocabulary:
    pieces = tuple(_read_lines(tokenizer_dir))
    fixed = frozenset(tok.special_ids)
    uncased = tuple(p if i in fixed else p.lower() for i, p in enumerate(pieces))
    with open(_source_file(tokenizer_dir), "rb") as f:
        fingerprint = hashlib.sha256(f.read()).hexdigest()
    return Vocabulary("wordpiece", pieces, fixed, frozenset(), uncased, fingerprint)


def normalize_chars(tok: Tokenizer, chars: str, uncase: bool) -> set[str]:
    """The characters the (uncased) BERT normalizer makes of `chars`."""
    from flaxlm.data.tokenizers import _bert_pipeline

    normalizer = _bert_pipeline(None, lowercase=tok.lowercase or uncase,
                                strip_accents=tok.strip_accents).normalizer
    return {
        c
        for text in (normalizer.normalize_str(c) for c in chars)
        for c in text if not c.isspace()
    }


def write_vocab(out_dir: str, pieces: tuple[str, ...]) -> None:
    with open(os.path.join(out_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
        f.writelines(p + "\n" for p in pieces)

"""A tokenizer's vocabulary as pruning sees it: pieces by flaxlm id, which ids are fixed, which
are single characters, and the piece each one becomes when the tokenizer is uncased."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    kind: str  # "sentencepiece" | "wordpiece"
    pieces: tuple[str, ...]  # by flaxlm id
    fixed_ids: frozenset[int]  # special and control tokens: always kept, never merged
    byte_ids: frozenset[int]  # SentencePiece byte-fallback pieces (<0x41>)
    # by id: the piece the uncased tokenizer has in its place (itself for fixed ids)
    uncased: tuple[str, ...]
    fingerprint: str  # sha256 of the tokenizer's model file: counts must come from this one

    def char_of(self, piece: str) -> str | None:
        """The character a single-character piece stands for ("a" for "a" and "##a"; "▁")."""
        if len(piece) == 1:
            return piece
        if self.kind == "wordpiece" and len(piece) == 3 and piece.startswith("##"):
            return piece[2]
        return None

    @property
    def size(self) -> int:
        return len(self.pieces)

    def group_ids(self, uncase: bool) -> np.ndarray:
        """By id: the smallest id of the ids that become one piece (the id itself without
        uncasing, and for fixed ids)."""
        keys = self.uncased if uncase else self.pieces
        first: dict[str, int] = {}
        group_V = np.arange(self.size, dtype=np.int64)
        for i, key in enumerate(keys):
            if i not in self.fixed_ids:
                group_V[i] = first.setdefault(key, i)
        return group_V

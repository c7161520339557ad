"""Which tokens a pruned vocabulary keeps, and which old ids each new id comes from.

A token is kept when it occurs in at least `min_doc_freq` of the documents, when it is special,
and (`keep_chars`) when it is a single character of the language or a byte-fallback piece, so
that any text of the language still tokenizes without unknown tokens. Uncased, the case variants
of a piece form one group that is kept or dropped together, counted in every document holding
any of them; the new piece is the lowercase one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flaxlm.errors import FlaxlmError
from flaxlm.vocab.doc_freq import DocFreq
from flaxlm.vocab.vocabulary import Vocabulary


@dataclasses.dataclass(frozen=True)
class Plan:
    pieces: tuple[str, ...]  # by new id
    # by new id: the old ids that become it, the primary first (the lowercase piece itself when
    # the vocabulary has it, else the most frequent variant)
    sources: tuple[tuple[int, ...], ...]
    exact: tuple[bool, ...]  # by new id: whether the primary's piece is the new piece
    kept: dict[str, int]  # how many new ids each rule kept: special, frequent, characters

    @property
    def size(self) -> int:
        return len(self.pieces)

    def kept_old_ids(self) -> np.ndarray:
        return np.array(sorted(i for ids in self.sources for i in ids), np.int64)


def select(vocab: Vocabulary, freq: DocFreq, *, min_doc_freq: float, uncase: bool,
           keep_chars: set[str] | None) -> Plan:
    """`keep_chars`: the (normalized) characters whose single-character pieces are kept, or
    None to keep only by frequency."""
    group_V = vocab.group_ids(uncase)
    docs_V = freq.docs_uncased_V if uncase else freq.docs_V
    keys = vocab.uncased if uncase else vocab.pieces
    needed = min_doc_freq * freq.num_docs
    special_pieces = {vocab.pieces[i] for i in vocab.fixed_ids}
    members: dict[int, list[int]] = {}
    for i in range(vocab.size):
        members.setdefault(int(group_V[i]), []).append(i)
    pieces, sources, exact = [], [], []
    kept = {"special": 0, "frequent": 0, "characters": 0}
    words_kept = 0  # frequent pieces other than the bare word boundary "▁", which every text has
    for group, ids in members.items():  # in order of first id: the old order
        key = keys[group]
        if group in vocab.fixed_ids:
            rule = "special"
        elif not key or key in special_pieces:
            # a piece the normalizer deletes is never produced; one that lowercases to a special
            # token's text ("<S>") would duplicate it
            continue
        elif docs_V[group] >= needed:
            rule = "frequent"
        elif keep_chars is not None and (group in vocab.byte_ids
                                         or vocab.char_of(key) in keep_chars):
            rule = "characters"
        else:
            continue
        kept[rule] += 1
        words_kept += rule == "frequent" and key != "▁"
        same = [i for i in ids if vocab.pieces[i] == key]
        primary = same[0] if same else max(ids, key=lambda i: (freq.tokens_V[i], -i))
        pieces.append(key)
        sources.append((primary, *(i for i in ids if i != primary)))
        exact.append(bool(same))
    if not words_kept:
        best = docs_V[[i for i in range(vocab.size) if i not in vocab.fixed_ids]].max(initial=0)
        raise FlaxlmError(f"no token besides the special ones occurs in {min_doc_freq:g} of the "
                          f"{freq.num_docs} documents (the most frequent is in {best}); lower "
                          "--min-doc-freq or give more text")
    return Plan(tuple(pieces), tuple(sources), tuple(exact), kept)

"""A pruned (and optionally uncased) SentencePiece model, edited as a `ModelProto`.

flaxlm ids follow XLM-R: `<s> <pad> </s> <unk>`, then SentencePiece piece p (p ≥ 3) as id p + 1,
then `<mask>`. The new model keeps `<unk>, <s>, </s>` as its first three pieces (transformers'
converter and that id layout expect them) and the kept pieces in their original order, with their
original scores: on text whose segmentation used only kept pieces, Viterbi over a sub-lattice
that still holds the best path finds the same path.

Uncasing swaps the normalizer. Its rules live in `normalizer_spec.precompiled_charsmap`, so the
spec of SentencePiece's own `nmt_nfkc_cf` rule (NFKC + Unicode case folding) is compiled by
`SentencePieceNormalizer` and copied in whole; transformers builds its `Precompiled` normalizer
from the same bytes, so both libraries lowercase identically. Each piece becomes what that
normalizer makes of it.
"""

from __future__ import annotations

import hashlib
import os

from flaxlm.data.tokenizers import SP_MODEL_FILE
from flaxlm.errors import FlaxlmError
from flaxlm.vocab.vocabulary import Vocabulary

_FAIRSEQ_HEAD = ("<s>", "<pad>", "</s>", "<unk>")
_SP_HEAD = (("<unk>", 2), ("<s>", 3), ("</s>", 3))  # (piece, ModelProto type) of pieces 0..2
_UNCASED_RULE = "nmt_nfkc_cf"
# Rules --uncase can replace by nmt_nfkc_cf without changing anything but case.
_CASED_RULES = ("nmt_nfkc", _UNCASED_RULE)
_CONTROL, _BYTE = 3, 6


def read_proto(tokenizer_dir: str):
    from sentencepiece import sentencepiece_model_pb2

    path = os.path.join(tokenizer_dir, SP_MODEL_FILE)
    if not os.path.isfile(path):
        raise FlaxlmError(f"{tokenizer_dir}: no {SP_MODEL_FILE}; pruning edits the SentencePiece "
                          "model itself (a tokenizer kept only as tokenizer.json cannot be pruned)")
    proto = sentencepiece_model_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    head = tuple((p.piece, p.type) for p in proto.pieces[:3])
    if head != _SP_HEAD:
        raise FlaxlmError(f"{path}: pieces 0..2 are {head}, expected <unk>, <s>, </s> (the "
                          "layout of XLM-R's model that flaxlm's ids assume)")
    return proto


def _normalizer(rule: str, proto=None):
    import sentencepiece as spm

    # Pieces and single characters are normalized alone: no dummy "▁", spaces kept as they are.
    kwargs = dict(add_dummy_prefix=False, remove_extra_whitespaces=False)
    if proto is not None:
        return spm.SentencePieceNormalizer(model_proto=proto, **kwargs)
    return spm.SentencePieceNormalizer(rule_name=rule, **kwargs)


def read_vocabulary(tokenizer_dir: str, vocab_size: int) -> Vocabulary:
    proto = read_proto(tokenizer_dir)
    sp_pieces = proto.pieces
    pieces = (*_FAIRSEQ_HEAD, *(p.piece for p in sp_pieces[3:]), "<mask>")
    if len(pieces) != vocab_size:
        raise FlaxlmError(f"{tokenizer_dir}: {SP_MODEL_FILE} gives {len(pieces)} ids but the "
                          f"tokenizer has {vocab_size}")
    fixed = {0, 1, 2, 3, len(pieces) - 1}
    fixed.update(p + 1 for p in range(3, len(sp_pieces)) if sp_pieces[p].type == _CONTROL)
    byte_ids = frozenset(p + 1 for p in range(3, len(sp_pieces)) if sp_pieces[p].type == _BYTE)
    fold = _normalizer(_UNCASED_RULE)
    uncased = tuple(piece if i in fixed or i in byte_ids
                    else fold.Normalize(piece.replace("▁", " "))
                    for i, piece in enumerate(pieces))
    with open(os.path.join(tokenizer_dir, SP_MODEL_FILE), "rb") as f:
        fingerprint = hashlib.sha256(f.read()).hexdigest()
    return Vocabulary("sentencepiece", pieces, frozenset(fixed), byte_ids, uncased, fingerprint)


def normalize_chars(tokenizer_dir: str, chars: str, uncase: bool) -> set[str]:
    """The characters the (uncased) tokenizer sees for each of `chars`: what its single-character
    pieces must cover. Whitespace becomes "▁"."""
    if uncase:
        check_uncasable(tokenizer_dir)
    norm = _normalizer(_UNCASED_RULE) if uncase else _normalizer("", read_proto(tokenizer_dir))
    return {c for text in norm.Normalize(list(chars)) for c in text}


def check_uncasable(tokenizer_dir: str) -> None:
    rule = read_proto(tokenizer_dir).normalizer_spec.name
    if rule not in _CASED_RULES:
        raise FlaxlmError(f"{os.path.join(tokenizer_dir, SP_MODEL_FILE)}: normalizer {rule!r}; "
                          f"--uncase replaces {' or '.join(_CASED_RULES)} by {_UNCASED_RULE} and "
                          "would change more than case here")


def write_model(tokenizer_dir: str, out_dir: str, pieces: tuple[str, ...],
                sources: tuple[tuple[int, ...], ...], uncase: bool) -> None:
    """`out_dir/sentencepiece.bpe.model` holding `pieces` (by new flaxlm id, in the fairseq
    layout); each new piece takes the score and type of its first source id."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    proto = read_proto(tokenizer_dir)
    old = list(proto.pieces)
    del proto.pieces[3:]
    for piece, ids in zip(pieces[4:-1], sources[4:-1]):
        source = old[ids[0] - 1]
        proto.pieces.add(piece=piece, score=source.score, type=source.type)
    if uncase:
        check_uncasable(tokenizer_dir)
        spec = sentencepiece_model_pb2.NormalizerSpec()
        spec.ParseFromString(spm.SentencePieceNormalizer(
            rule_name=_UNCASED_RULE).serialized_normalizer_spec())
        flags = proto.normalizer_spec  # how whitespace is treated stays the source's
        spec.add_dummy_prefix = flags.add_dummy_prefix
        spec.escape_whitespaces = flags.escape_whitespaces
        spec.remove_extra_whitespaces = flags.remove_extra_whitespaces
        proto.normalizer_spec.CopyFrom(spec)
    proto.trainer_spec.vocab_size = len(proto.pieces)
    with open(os.path.join(out_dir, SP_MODEL_FILE), "wb") as f:
        f.write(proto.SerializeToString())

"""A pruned (and optionally uncased) SentencePiece model, edited as a `ModelProto`.

flaxlm ids follow XLM-R: `<s> <pad> </s> <unk>`, then SentencePiece piece p (p ≥ 3) as id p + 1,
then `<mask>`. The new model keeps `<unk>, <s>, </s>` as its first three pieces (transformers'
converter and that id layout expect them) and the kept pieces in their original order, with their
original scores: on text whose segmentation used only kept pieces, Viterbi over a sub-lattice
that still holds the best path finds the same path.

A tokenizer kept only as `tokenizer.json` (a Unigram model in the same layout, as most hub
repositories ship XLM-R's) is read into the same `ModelProto`: its pieces and scores, its
`Precompiled` charsmap and its whitespace handling; the pruned tokenizer is then a
`sentencepiece.bpe.model` like any other. The proto is checked to tokenize as the file does.

Uncasing swaps the normalizer. Its rules live in `normalizer_spec.precompiled_charsmap`, so for
the named rule `nmt_nfkc` the spec of SentencePiece's own `nmt_nfkc_cf` (NFKC + Unicode case
folding) is compiled by `SentencePieceNormalizer` and copied in whole; any other charsmap (the
real XLM-R `tokenizer.json` holds one without a name) is recompiled with lowercasing composed in
(`charsmap.py`). transformers builds its `Precompiled` normalizer from the same bytes, so both
libraries lowercase identically. Each piece becomes what that normalizer makes of it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re

from flaxlm.data.tokenizers import SP_MODEL_FILE, TOKENIZER_JSON
from flaxlm.errors import FlaxlmError
from flaxlm.vocab import charsmap
from flaxlm.vocab.vocabulary import Vocabulary

_FAIRSEQ_HEAD = ("<s>", "<pad>", "</s>", "<unk>")
_SP_HEAD = (("<unk>", 2), ("<s>", 3), ("</s>", 3))  # (piece, ModelProto type) of pieces 0..2
_UNCASED_RULE = "nmt_nfkc_cf"
# Rules --uncase can replace by nmt_nfkc_cf without changing anything but case.
_CASED_RULES = ("nmt_nfkc", _UNCASED_RULE)
_NORMAL, _CONTROL, _USER_DEFINED, _BYTE = 1, 3, 4, 6
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
# Text every source proto must tokenize as its tokenizer.json does (accents, case, digits, space).
_PROBE_TEXTS = ("Il sistema Linux è una piattaforma informatica molto potente.",
                "CODICE SORGENTE — São Paulo, Zürich: naïve café, 42 volte nel 2024!",
                "  spazi   ripetuti\tе кириллица 東京 ﬁ")


def source_file(tokenizer_dir: str) -> str:
    """The file the vocabulary is read from: the SentencePiece model, else tokenizer.json."""
    path = os.path.join(tokenizer_dir, SP_MODEL_FILE)
    if os.path.isfile(path):
        return path
    path = os.path.join(tokenizer_dir, TOKENIZER_JSON)
    if os.path.isfile(path):
        return path
    raise FlaxlmError(f"{tokenizer_dir}: neither {SP_MODEL_FILE} nor {TOKENIZER_JSON}; pruning "
                      "edits the tokenizer's vocabulary and needs one of them")


def read_proto(tokenizer_dir: str):
    from sentencepiece import sentencepiece_model_pb2

    path = source_file(tokenizer_dir)
    proto = sentencepiece_model_pb2.ModelProto()
    with open(path, "rb") as f:
        raw = f.read()
    proto.ParseFromString(
        _proto_from_tokenizer_json(raw, path) if path.endswith(TOKENIZER_JSON) else raw)
    head = tuple((p.piece, p.type) for p in proto.pieces[:3])
    if head != _SP_HEAD:
        raise FlaxlmError(f"{path}: pieces 0..2 are {head}, expected <unk>, <s>, </s> (the "
                          "layout of XLM-R's model that flaxlm's ids assume)")
    return proto


@functools.lru_cache(maxsize=2)  # read, counted and written from: one conversion
def _proto_from_tokenizer_json(raw: bytes, path: str) -> bytes:
    """The serialized `ModelProto` of the Unigram `tokenizer.json` `raw` in XLM-R's id layout
    (`<s> <pad> </s> <unk>`, pieces, `<mask>`), refused in one line where SentencePiece has no
    equivalent."""
    from sentencepiece import sentencepiece_model_pb2

    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FlaxlmError(f"{path}: not a JSON tokenizer file ({e})") from None
    model = data.get("model") or {}
    vocab = model.get("vocab")
    if model.get("type") != "Unigram" or not isinstance(vocab, list):
        raise FlaxlmError(f"{path}: a {model.get('type')} model; a SentencePiece vocabulary is "
                          "read from a Unigram tokenizer.json")
    head = tuple(str(v[0]) for v in vocab[:4])
    if head != _FAIRSEQ_HEAD or vocab[-1][0] != "<mask>" or model.get("unk_id") != 3:
        raise FlaxlmError(f"{path}: ids 0..3 are {head}, the last {vocab[-1][0]!r}, unk_id "
                          f"{model.get('unk_id')}; flaxlm reads XLM-R's layout (<s> <pad> </s> "
                          "<unk> … <mask>, unk_id 3)")
    proto = sentencepiece_model_pb2.ModelProto()
    for piece, kind in _SP_HEAD:
        proto.pieces.add(piece=piece, score=0.0, type=kind)
    byte_fallback = bool(model.get("byte_fallback"))
    added = {t["id"] for t in data.get("added_tokens") or [] if not t.get("special")}
    for i, (piece, score) in enumerate(vocab[4:-1], start=4):
        kind = (_BYTE if byte_fallback and _BYTE_PIECE.fullmatch(piece) else
                _USER_DEFINED if i in added else _NORMAL)
        proto.pieces.add(piece=piece, score=float(score), type=kind)
    proto.trainer_spec.model_type = sentencepiece_model_pb2.TrainerSpec.UNIGRAM
    proto.trainer_spec.vocab_size = len(proto.pieces)
    proto.trainer_spec.byte_fallback = byte_fallback
    proto.trainer_spec.pad_id = -1
    spec = proto.normalizer_spec
    spec.name = ""
    spec.escape_whitespaces = True
    spec.add_dummy_prefix, spec.remove_extra_whitespaces = _whitespace_flags(data, path)
    blob = _charsmap_of(data.get("normalizer"), path)
    if blob:
        spec.precompiled_charsmap = blob
    _check_same_ids(proto, path)
    return proto.SerializeToString()


def _charsmap_of(normalizer, path: str) -> bytes:
    """The `Precompiled` charsmap of a tokenizer.json normalizer (b"" for none); the only other
    step allowed is the collapse of repeated spaces, which SentencePiece does itself."""
    import base64

    steps = (normalizer.get("normalizers") if normalizer and normalizer.get("type") == "Sequence"
             else [normalizer] if normalizer else [])
    blob = b""
    for step in steps:
        if step.get("type") == "Precompiled":
            value = step.get("precompiled_charsmap")
            blob = bytes(value) if isinstance(value, list) else base64.b64decode(value or "")
        elif not (step.get("type") == "Replace" and step.get("content") == " "
                  and step.get("pattern") in ({
                      "Regex": " {2,}"
                  }, {
                      "String": "  "
                  })):
            raise FlaxlmError(f"{path}: normalizer step {step.get('type')!r} has no SentencePiece "
                              "equivalent; flaxlm reads Precompiled charsmaps")
    return blob


def _whitespace_flags(data: dict, path: str) -> tuple[bool, bool]:
    """(add_dummy_prefix, remove_extra_whitespaces) of the file's Metaspace pre-tokenizer."""
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    metaspace = [p for p in steps if p.get("type") == "Metaspace"]
    if len(metaspace) != 1 or metaspace[0].get("replacement", "▁") != "▁":
        raise FlaxlmError(f"{path}: pre-tokenizer {pre.get('type')!r} is not SentencePiece's "
                          "(one Metaspace with '▁')")
    m = metaspace[0]
    prefix = m.get("prepend_scheme", "always" if m.get("add_prefix_space", True) else "never")
    collapse = any(p.get("type") == "WhitespaceSplit"
                   for p in steps) or "Replace" in json.dumps(data.get("normalizer"))
    return prefix != "never", collapse


def _check_same_ids(proto, path: str) -> None:
    import sentencepiece as spm
    from tokenizers import Tokenizer as HfTokenizer

    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    ours = [[i + 1 if i else 3 for i in ids] for ids in sp.encode(list(_PROBE_TEXTS))]
    theirs = [
        e.ids for e in HfTokenizer.from_file(path).encode_batch(list(_PROBE_TEXTS),
                                                                add_special_tokens=False)
    ]
    for text, a, b in zip(_PROBE_TEXTS, ours, theirs):
        if a != b:
            raise FlaxlmError(f"{path}: read as a SentencePiece model it tokenizes {text!r} "
                              f"differently ({a[:8]}… vs {b[:8]}…); it cannot be pruned exactly")


@functools.lru_cache(maxsize=2)
def _uncased_spec_bytes(source_spec: bytes) -> bytes:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    flags = sentencepiece_model_pb2.NormalizerSpec()
    flags.ParseFromString(source_spec)
    spec = sentencepiece_model_pb2.NormalizerSpec()
    if flags.name in _CASED_RULES:
        spec.ParseFromString(
            spm.SentencePieceNormalizer(rule_name=_UNCASED_RULE).serialized_normalizer_spec())
    else:  # the source's own rules, then lowercase
        spec.name = "lowercased"
        spec.precompiled_charsmap = charsmap.lowercased(flags.precompiled_charsmap,
                                                        "the tokenizer's normalizer")
    # How whitespace is treated stays the source's.
    spec.add_dummy_prefix = flags.add_dummy_prefix
    spec.escape_whitespaces = flags.escape_whitespaces
    spec.remove_extra_whitespaces = flags.remove_extra_whitespaces
    return spec.SerializeToString()


def uncased_spec(proto):
    """The normalizer spec of the uncased tokenizer: `nmt_nfkc_cf` for `nmt_nfkc`, else the
    source's charsmap with lowercasing composed in."""
    from sentencepiece import sentencepiece_model_pb2

    spec = sentencepiece_model_pb2.NormalizerSpec()
    spec.ParseFromString(_uncased_spec_bytes(proto.normalizer_spec.SerializeToString()))
    return spec


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
    fold = _uncased_normalizer(proto)
    uncased = tuple(
        piece if i in fixed or i in byte_ids else fold.Normalize(piece.replace("▁", " "))
        for i, piece in enumerate(pieces))
    with open(source_file(tokenizer_dir), "rb") as f:
        fingerprint = hashlib.sha256(f.read()).hexdigest()
    return Vocabulary("sentencepiece", pieces, frozenset(fixed), byte_ids, uncased, fingerprint)


def normalize_chars(tokenizer_dir: str, chars: str, uncase: bool) -> set[str]:
    """The characters the (uncased) tokenizer sees for each of `chars`: what its single-character
    pieces must cover. Whitespace becomes "▁"."""
    proto = read_proto(tokenizer_dir)
    norm = _uncased_normalizer(proto) if uncase else _normalizer("", proto)
    return {c for text in norm.Normalize(list(chars)) for c in text}


def _uncased_normalizer(proto):
    import sentencepiece as spm

    return spm.SentencePieceNormalizer(normalizer_spec=uncased_spec(proto), add_dummy_prefix=False,
                                       remove_extra_whitespaces=False)


def write_model(tokenizer_dir: str, out_dir: str, pieces: tuple[str, ...],
                sources: tuple[tuple[int, ...], ...], uncase: bool) -> None:
    """`out_dir/sentencepiece.bpe.model` holding `pieces` (by new flaxlm id, in the fairseq
    layout); each new piece takes the score and type of its first source id."""
    proto = read_proto(tokenizer_dir)
    old = list(proto.pieces)
    del proto.pieces[3:]
    for piece, ids in zip(pieces[4:-1], sources[4:-1]):
        source = old[ids[0] - 1]
        proto.pieces.add(piece=piece, score=source.score, type=source.type)
    if uncase:
        proto.normalizer_spec.CopyFrom(uncased_spec(proto))
    proto.trainer_spec.vocab_size = len(proto.pieces)
    with open(os.path.join(out_dir, SP_MODEL_FILE), "wb") as f:
        f.write(proto.SerializeToString())

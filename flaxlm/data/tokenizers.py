"""Tokenizers: train, save and load the two kinds the contract names (docs/architecture.md).

A tokenizer is a directory. Besides the model file (`sentencepiece.bpe.model` or `vocab.txt`) it
holds `flaxlm_tokenizer.json` (our metadata), `tokenizer.json` (what transformers runs, loadable
with the `tokenizers` library alone) and the `tokenizer_config.json` + `special_tokens_map.json`
that let `transformers.AutoTokenizer.from_pretrained(dir)` load the same vocabulary with the same
ids; the release bundle copies those files. A directory imported from a checkpoint that ships only
`tokenizer.json` has no model file: it is then encoded by `tokenizer.json` itself.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import sentencepiece as spm
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import models, normalizers, pre_tokenizers, trainers

from flaxlm import storage
from flaxlm.data import sources
from flaxlm.data.tokenizer_dir import (  # noqa: F401 - callers name the directory's files here too
    META_FILE, MODEL_MAX_LENGTH, SP_MODEL_FILE, TOKENIZER_JSON, VOCAB_FILE, XLMR_SPECIAL_TOKENS,
    Tokenizer,
)
from flaxlm.data.tokenizer_json import load_tokenizer_json, write_tokenizer_json
from flaxlm.errors import FlaxlmError

# fairseq's dictionary puts four symbols before the SentencePiece pieces; XLM-R kept that layout.
_XLMR_SPECIALS = {"cls": ("<s>", 0), "pad": ("<pad>", 1), "sep": ("</s>", 2), "unk": ("<unk>", 3)}
_BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
_MODEL_FILE = {"sentencepiece": SP_MODEL_FILE, "wordpiece": VOCAB_FILE}


def _table_encoder(encode_backend_ids, id_by_backend_id: np.ndarray,
                   word_start_by_backend_id: np.ndarray):
    """An encoder for backends whose word starts are a property of the piece (`▁x`, not `##x`);
    `id_by_backend_id` maps the backend's ids to ours (the fairseq shift for SentencePiece)."""
    def encode(texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for backend_ids in encode_backend_ids(texts):
            backend_ids = np.asarray(backend_ids, dtype=np.int32)
            word_start = word_start_by_backend_id[backend_ids]
            # The first token of a text always opens a word, even an `<unk>` without `▁`.
            word_start[:1] = True
            out.append((id_by_backend_id[backend_ids], word_start))
        return out

    return encode


def load_tokenizer(path: str) -> Tokenizer:
    """Reads a tokenizer directory written by `train_tokenizer` (or by vocabulary pruning); a
    `gs://` one is read from a local copy (the tokenizer libraries read local files only)."""
    if storage.is_remote(path) and storage.isfile(os.path.join(path, META_FILE)):
        path = storage.local_copy(path)
    meta_path = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_path):
        raise FlaxlmError(f"{meta_path}: not found; is {path!r} a flaxlm tokenizer directory?")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        kind = meta["kind"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FlaxlmError(f"{meta_path}: not valid tokenizer metadata ({e!r})") from e
    if kind not in _MODEL_FILE:
        raise FlaxlmError(
            f"{meta_path}: key 'kind' is {kind!r}, expected 'sentencepiece' or 'wordpiece'")
    model_file = os.path.join(path, _MODEL_FILE[kind])
    json_file = os.path.join(path, TOKENIZER_JSON)
    if os.path.isfile(model_file) or os.path.isfile(json_file):
        source = model_file if os.path.isfile(model_file) else json_file
        tok = _load_backend(path, meta, kind, source)
    else:
        raise FlaxlmError(f"{path}: holds neither {_MODEL_FILE[kind]} nor {TOKENIZER_JSON}; "
                          f"a {kind} tokenizer needs one of them")
    if meta.get("vocab_size", tok.vocab_size) != tok.vocab_size:
        raise FlaxlmError(f"{meta_path}: key 'vocab_size' says {meta['vocab_size']} "
                          f"but the model file holds {tok.vocab_size}")
    return tok


def _load_backend(path: str, meta: dict, kind: str, source: str) -> Tokenizer:
    """The tokenizer from its model file (or tokenizer.json); a damaged file is one line naming it
    (the backends raise bare RuntimeError/ValueError/Exception from C++ for unparsable files)."""
    try:
        if source.endswith(TOKENIZER_JSON):
            return load_tokenizer_json(path, meta, kind)
        load = _load_sentencepiece if kind == "sentencepiece" else _load_wordpiece
        return load(path, meta)
    except FlaxlmError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure of a user file is a user error
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FlaxlmError(f"{source} cannot be read ({reason}); the tokenizer directory is "
                          "damaged: restore it from a copy") from None


def train_tokenizer(
    corpus_files: Sequence[str],
    *,
    vocab_size: int,
    kind: str,
    out_dir: str,
    lowercase: bool = False,
    strip_accents: bool = False,
    text_field: str = "text",
) -> Tokenizer:
    """Trains a tokenizer on the paragraphs of `corpus_files` (any `sources` spec; `text_field`
    names the Parquet column / JSON field) into `out_dir`.

    `vocab_size` is the final vocabulary including special tokens. kind "unigram" trains a
    SentencePiece unigram model with the XLM-R id layout; "wordpiece" trains a BERT WordPiece
    vocabulary. A `gs://` `out_dir` is trained locally, then uploaded (flaxlm_tokenizer.json last).
    """
    if storage.is_remote(out_dir):
        with tempfile.TemporaryDirectory(prefix="flaxlm-tokenizer-") as staging:
            train_tokenizer(corpus_files, vocab_size=vocab_size, kind=kind, out_dir=staging,
                            lowercase=lowercase, strip_accents=strip_accents, text_field=text_field)
            storage.upload_files(staging, out_dir, last=META_FILE)
        return load_tokenizer(out_dir)
    if vocab_size < 16:
        raise FlaxlmError(f"vocab_size={vocab_size}: too small for a tokenizer (need at least 16)")
    if kind not in ("unigram", "wordpiece"):
        raise FlaxlmError(f"kind={kind!r}: expected 'unigram' or 'wordpiece'")
    if kind == "unigram" and strip_accents:
        raise FlaxlmError(
            "strip_accents=True: not supported for kind 'unigram' (SentencePiece keeps accents)")
    paragraphs = _paragraphs(sources.iter_documents(corpus_files, text_field))
    os.makedirs(out_dir, exist_ok=True)
    # transformers would read a stale tokenizer.json in preference to the new model file.
    if os.path.exists(os.path.join(out_dir, TOKENIZER_JSON)):
        os.remove(os.path.join(out_dir, TOKENIZER_JSON))
    if kind == "unigram":
        _train_sentencepiece(paragraphs, vocab_size=vocab_size, out_dir=out_dir,
                             lowercase=lowercase)
    else:
        _train_wordpiece(paragraphs, vocab_size, out_dir, lowercase=lowercase,
                         strip_accents=strip_accents)
    write_tokenizer_json(out_dir)
    return load_tokenizer(out_dir)


def _paragraphs(documents: Iterable[list[str]]) -> Iterator[str]:
    for paragraphs in documents:
        yield from paragraphs


# --- SentencePiece (XLM-R layout) ---------------------------------------------------------------


def _train_sentencepiece(paragraphs: Iterator[str], *, vocab_size: int, out_dir: str,
                         lowercase: bool) -> None:
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=paragraphs,
            model_writer=model,
            model_type="unigram",
            vocab_size=vocab_size - 2,  # <pad> and <mask> live outside the SentencePiece model
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            # nmt_nfkc_cf = NFKC + case folding; the HF converter copies the compiled rules.
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            # Paragraphs, not sentences, are the training units: keep long ones, do not drop them.
            max_sentence_length=1 << 16,
            input_sentence_size=5_000_000,
            shuffle_input_sentence=True,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise FlaxlmError(
            f"SentencePiece training with vocab_size={vocab_size} failed (its own sizes below "
            f"exclude <pad> and <mask>): {e}") from e
    with open(os.path.join(out_dir, SP_MODEL_FILE), "wb") as f:
        f.write(model.getvalue())
    _write_json(
        out_dir,
        META_FILE,
        {
            "kind": "sentencepiece",
            "lowercase": lowercase,
            "strip_accents": False,
            "vocab_size": vocab_size,
            "special_ids": {
                "cls": 0,
                "pad": 1,
                "sep": 2,
                "unk": 3,
                "mask": vocab_size - 1
            },
        },
    )
    _write_hf_configs(out_dir, "XLMRobertaTokenizer", XLMR_SPECIAL_TOKENS, {})


def _load_sentencepiece(path: str, meta: dict) -> Tokenizer:
    sp = spm.SentencePieceProcessor(model_file=os.path.join(path, SP_MODEL_FILE))
    sp_size = sp.get_piece_size()
    unk_id = _XLMR_SPECIALS["unk"][1]
    # Of its control ids SentencePiece only ever emits unk (sp id 0); all other ids shift by one.
    id_by_sp_id = np.arange(1, sp_size + 1, dtype=np.int32)
    id_by_sp_id[sp.unk_id()] = unk_id
    word_start_by_sp_id = np.array([sp.id_to_piece(i).startswith("▁") for i in range(sp_size)])
    num_threads = os.cpu_count() or 1
    mask_id = sp_size + 1
    return Tokenizer(
        kind="sentencepiece",
        vocab_size=sp_size + 2,
        pad_id=_XLMR_SPECIALS["pad"][1],
        cls_id=_XLMR_SPECIALS["cls"][1],
        sep_id=_XLMR_SPECIALS["sep"][1],
        mask_id=mask_id,
        unk_id=unk_id,
        special_ids=tuple(sorted([i for _, i in _XLMR_SPECIALS.values()] + [mask_id])),
        lowercase=bool(meta.get("lowercase", False)),
        strip_accents=False,
        path=path,
        _encode=_table_encoder(
            lambda texts: sp.encode(texts, out_type=int, num_threads=num_threads),
            id_by_sp_id,
            word_start_by_sp_id,
        ),
    )


# --- WordPiece (BERT layout) --------------------------------------------------------------------


def _bert_pipeline(vocab: dict[str, int] | None, *, lowercase: bool, strip_accents: bool):
    """The normalizer + pre-tokenizer that `BertTokenizerFast` builds from the same flags."""
    tok = HfTokenizer(models.WordPiece(vocab, unk_token=_BERT_SPECIALS["unk"]))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def _train_wordpiece(
    paragraphs: Iterator[str],
    vocab_size: int,
    out_dir: str,
    *,
    lowercase: bool,
    strip_accents: bool,
) -> None:
    tok = _bert_pipeline(None, lowercase=lowercase, strip_accents=strip_accents)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size,
                                        special_tokens=list(_BERT_SPECIALS.values()),
                                        show_progress=False)
    tok.train_from_iterator(paragraphs, trainer)
    vocab = sorted(tok.get_vocab().items(), key=lambda item: item[1])
    with open(os.path.join(out_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token, _ in vocab)
    ids = dict(vocab)
    _write_json(
        out_dir,
        META_FILE,
        {
            "kind": "wordpiece",
            "lowercase": lowercase,
            "strip_accents": strip_accents,
            "vocab_size": len(vocab),
            "special_ids": {
                name: ids[token]
                for name, token in _BERT_SPECIALS.items()
            },
        },
    )
    # strip_accents is written explicitly: BERT's default (None) would follow do_lower_case.
    flags = {
        "do_lower_case": lowercase,
        "strip_accents": strip_accents,
        "tokenize_chinese_chars": True,
    }
    _write_hf_configs(out_dir, "BertTokenizer", {
        f"{k}_token": v
        for k, v in _BERT_SPECIALS.items()
    }, flags)


def _load_wordpiece(path: str, meta: dict) -> Tokenizer:
    vocab_path = os.path.join(path, VOCAB_FILE)
    with open(vocab_path, encoding="utf-8") as f:
        # Split on "\n" only, as transformers does: a token may contain U+2028 and friends.
        tokens = f.read().split("\n")
    if tokens and not tokens[-1]:
        tokens.pop()
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise FlaxlmError(f"{vocab_path}: duplicate tokens; ids must be unique line numbers")
    missing = [t for t in _BERT_SPECIALS.values() if t not in vocab]
    if missing:
        raise FlaxlmError(f"{vocab_path}: special tokens {missing} are missing")
    lowercase = bool(meta.get("lowercase", False))
    strip_accents = bool(meta.get("strip_accents", False))
    tok = _bert_pipeline(vocab, lowercase=lowercase, strip_accents=strip_accents)
    special = {name: vocab[token] for name, token in _BERT_SPECIALS.items()}

    def encode_ids(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

    return Tokenizer(
        kind="wordpiece",
        vocab_size=len(tokens),
        pad_id=special["pad"],
        cls_id=special["cls"],
        sep_id=special["sep"],
        mask_id=special["mask"],
        unk_id=special["unk"],
        special_ids=tuple(sorted(special.values())),
        lowercase=lowercase,
        strip_accents=strip_accents,
        path=path,
        _encode=_table_encoder(
            encode_ids,
            np.arange(len(tokens), dtype=np.int32),
            np.array([not t.startswith("##") for t in tokens]),
        ),
    )


# --- Hugging Face side files --------------------------------------------------------------------


def _write_hf_configs(out_dir: str, tokenizer_class: str, specials: dict[str, str],
                      flags: dict) -> None:
    config = {
        "tokenizer_class": tokenizer_class,
        "model_max_length": MODEL_MAX_LENGTH,
        **flags,
        **specials,
    }
    _write_json(out_dir, "tokenizer_config.json", config)
    _write_json(out_dir, "special_tokens_map.json", specials)


def _write_json(out_dir: str, name: str, obj: dict) -> None:
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")

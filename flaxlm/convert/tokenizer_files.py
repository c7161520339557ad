"""Tokenizer files both ways: a flaxlm tokenizer dir ↔ the files `AutoTokenizer` loads.

Both directions end with a check that the two tokenizers give the same ids on real text and agree
on the special ids and the vocabulary size. HF tokenizers are only ever built with
`AutoTokenizer.from_pretrained(directory)`: in transformers 5, constructing `XLMRobertaTokenizer`
or `BertTokenizerFast` from a `vocab_file` silently yields a 5-token vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

from flaxlm.convert.safe_load import check_links, check_tokenizer_config, confined, read_json
from flaxlm.data.tokenizer_dir import XLMR_SPECIAL_TOKENS
from flaxlm.data.tokenizers import (META_FILE, SP_MODEL_FILE, TOKENIZER_JSON, VOCAB_FILE, Tokenizer,
                                    load_tokenizer)
from flaxlm.errors import FlaxlmError

log = logging.getLogger("flaxlm.convert")
BERT_SPECIALS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]"
}

# Real text the id comparison (and the parity batch) runs on: accents, case, digits, punctuation.
SAMPLE_TEXTS = (
    "Il sistema Linux è una piattaforma informatica molto potente per un computer in rete.",
    "Esiste una mappa dettagliata completa chiamata \"CODICE SORGENTE\". È molto accurata!",
    "The quick brown fox jumps over the lazy dog, 42 times in 2024.",
    "Però perché Città? São Paulo, Zürich — naïve café.",
)


def _write_json(path: str, obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def _hf_side_files(out_dir: str, kind: str, *, lowercase: bool, strip_accents: bool,
                   model_max_length: int, token_types: bool = True) -> None:
    if kind == "sentencepiece":
        specials, config = XLMR_SPECIAL_TOKENS, {"tokenizer_class": "XLMRobertaTokenizer"}
    else:
        specials = BERT_SPECIALS
        # strip_accents written explicitly: BERT's default (None) would follow do_lower_case.
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": lowercase,
            "strip_accents": strip_accents,
            "tokenize_chinese_chars": True
        }
    if not token_types:
        # As DistilBERT's own tokenizers: no token_type_ids for a model that reads none.
        config["model_input_names"] = ["input_ids", "attention_mask"]
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        **config, "model_max_length": model_max_length,
        **specials
    })
    _write_json(os.path.join(out_dir, "special_tokens_map.json"), specials)


def load_hf_tokenizer(directory: str):
    from transformers import AutoTokenizer  # seconds to import: only when converting

    check_tokenizer_config(directory)
    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False,
                                             local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FlaxlmError(f"{directory}: transformers cannot load the tokenizer ({e})") from None


def check_rows(tokens: int, rows: int, where: str) -> int:
    """How many of the model's `rows` embedding rows no token id reaches (0 when the sizes are
    equal). Releases may embed more rows than their tokenizer has ids (multilingual-e5-small and
    mMiniLMv2: 250,037 rows, 250,002 tokens): the extra rows are kept, never read. Fewer rows
    than tokens would leave ids without an embedding, and are refused."""
    if tokens > rows:
        raise FlaxlmError(f"{where}: the tokenizer has {tokens} tokens but the model embeds only "
                          f"{rows} rows; ids {rows}..{tokens - 1} would have no embedding (pair "
                          "the model with the tokenizer it was trained with)")
    return rows - tokens


def unused_rows_note(unused: int, rows: int) -> str:
    return (f"{unused} of the model's {rows} embedding rows are never produced by the tokenizer "
            "(kept as they are; prune-vocab drops them)")


def compare(tok: Tokenizer, hf_tok, rows: int, where: str) -> None:
    """Same vocabulary size in both libraries (at most the model's `rows`), same special ids and
    same ids on `SAMPLE_TEXTS`, or a FlaxlmError."""
    if len(hf_tok) != tok.vocab_size:
        raise FlaxlmError(f"{where}: tokenizer vocabulary sizes disagree: transformers "
                          f"len(tokenizer)={len(hf_tok)}, flaxlm {tok.vocab_size}")
    check_rows(tok.vocab_size, rows, where)
    specials = {
        "pad": (hf_tok.pad_token_id, tok.pad_id),
        "cls": (hf_tok.cls_token_id, tok.cls_id),
        "sep": (hf_tok.sep_token_id, tok.sep_id),
        "mask": (hf_tok.mask_token_id, tok.mask_id),
        "unk": (hf_tok.unk_token_id, tok.unk_id)
    }
    for name, (hf_id, our_id) in specials.items():
        if hf_id != our_id:
            raise FlaxlmError(f"{where}: {name} id is {hf_id} in transformers but {our_id} in "
                              "flaxlm's tokenizer")
    ours = [ids.tolist() for ids, _ in tok.encode_batch(list(SAMPLE_TEXTS))]
    theirs = hf_tok(list(SAMPLE_TEXTS), add_special_tokens=False, verbose=False)["input_ids"]
    for text, a, b in zip(SAMPLE_TEXTS, ours, theirs):
        if a != b:
            raise FlaxlmError(f"{where}: tokenizers disagree on {text!r}: flaxlm {a[:12]}… vs "
                              f"transformers {b[:12]}…")


def write_release_tokenizer(tok: Tokenizer, out_dir: str, model_max_length: int,
                            token_types: bool = True):
    """Writes the HF tokenizer files for `tok` into `out_dir`; returns the loaded HF tokenizer.
    `token_types=False` (a model without them, DistilBERT): it returns no token_type_ids."""
    native = SP_MODEL_FILE if tok.kind == "sentencepiece" else VOCAB_FILE
    source = native if os.path.exists(os.path.join(tok.path, native)) else TOKENIZER_JSON
    shutil.copyfile(os.path.join(tok.path, source), os.path.join(out_dir, source))
    _hf_side_files(out_dir, tok.kind, lowercase=tok.lowercase, strip_accents=tok.strip_accents,
                   model_max_length=model_max_length, token_types=token_types)
    if source == native:
        # A fast-tokenizer file, so loading a 250k SentencePiece vocabulary needs no conversion.
        load_hf_tokenizer(out_dir).backend_tokenizer.save(os.path.join(out_dir, TOKENIZER_JSON))
    return load_hf_tokenizer(out_dir)


def _normalizer_flags(hf_tok) -> tuple[bool, bool]:
    """(lowercase, strip_accents) of the normalizer transformers runs. transformers 5 rebuilds a
    BERT normalizer from tokenizer_config.json (default: lowercase), whatever tokenizer.json says,
    so the loaded tokenizer is asked, not the files."""
    normalizer = hf_tok.backend_tokenizer.normalizer
    probe = normalizer.normalize_str("Àé") if normalizer is not None else "Àé"
    return probe in ("àé", "ae"), probe in ("Ae", "ae")


def _tokenizer_json_kind(hf_dir: str) -> str:
    """The flaxlm kind of `hf_dir/tokenizer.json`, read before transformers sees the file."""
    model = read_json(hf_dir, TOKENIZER_JSON).get("model")
    model_type = model.get("type") if isinstance(model, dict) else None
    kinds = {"Unigram": "sentencepiece", "WordPiece": "wordpiece"}
    if model_type not in kinds:
        raise FlaxlmError(f"{os.path.join(hf_dir, TOKENIZER_JSON)}: a {model_type} tokenizer; "
                          "flaxlm supports SentencePiece Unigram (XLM-R) and WordPiece (BERT)")
    return kinds[model_type]


def import_tokenizer(hf_dir: str, out_dir: str, arch: str, vocab_size: int,
                     model_max_length: int) -> tuple[Tokenizer, object]:
    """A flaxlm tokenizer dir built from the tokenizer files in `hf_dir` (a checkpoint, or the
    directory `flaxlm import --tokenizer` names), checked against transformers on real text;
    `vocab_size` is the model's embedding rows, which may outnumber the tokenizer's ids.
    Returns (flaxlm tokenizer, the transformers tokenizer of `hf_dir`).

    The architecture's own model file is copied when present (`sentencepiece.bpe.model` for XLM-R,
    `vocab.txt` for BERT); otherwise the directory's `tokenizer.json` is used, saved as the
    pipeline transformers actually runs, so ids and word starts equal `AutoTokenizer`'s."""
    if not os.path.isdir(hf_dir):
        raise FlaxlmError(f"{hf_dir}: not a directory")
    check_links(hf_dir)
    check_tokenizer_config(hf_dir)
    native = SP_MODEL_FILE if arch == "xlmr" else VOCAB_FILE
    has_native = os.path.exists(os.path.join(hf_dir, native))
    if not has_native and not os.path.exists(os.path.join(hf_dir, TOKENIZER_JSON)):
        raise FlaxlmError(f"{hf_dir}: no tokenizer ({native} or {TOKENIZER_JSON}); pass "
                          "--tokenizer DIR naming the directory of the tokenizer this model was "
                          "trained with (mMiniLMv2 uses XLM-R's)")
    if has_native:
        kind = "sentencepiece" if arch == "xlmr" else "wordpiece"
    else:
        kind = _tokenizer_json_kind(hf_dir)
    hf_tok = load_hf_tokenizer(hf_dir)
    os.makedirs(out_dir, exist_ok=True)
    if has_native:
        shutil.copyfile(confined(hf_dir, native, os.path.join(hf_dir, native)),
                        os.path.join(out_dir, native))
    lowercase, strip = _normalizer_flags(hf_tok)
    # Every flaxlm tokenizer dir carries the pipeline transformers runs (see tokenizers.py).
    hf_tok.backend_tokenizer.save(os.path.join(out_dir, TOKENIZER_JSON))
    specials = {
        "cls": hf_tok.cls_token_id,
        "pad": hf_tok.pad_token_id,
        "sep": hf_tok.sep_token_id,
        "unk": hf_tok.unk_token_id,
        "mask": hf_tok.mask_token_id
    }
    missing = [name for name, i in specials.items() if i is None]
    if missing:
        raise FlaxlmError(f"{hf_dir}: the tokenizer defines no {', '.join(missing)} token; "
                          "MLM training needs cls, pad, sep, unk and mask")
    meta = {"kind": kind, "lowercase": lowercase, "strip_accents": strip, "special_ids": specials}
    _write_json(os.path.join(out_dir, META_FILE), meta)
    _hf_side_files(out_dir, kind, lowercase=lowercase, strip_accents=strip,
                   model_max_length=model_max_length)
    tok = load_tokenizer(out_dir)
    compare(tok, hf_tok, vocab_size, f"{hf_dir} → {out_dir}")
    unused = vocab_size - tok.vocab_size
    if unused:
        log.warning("flaxlm import: %s", unused_rows_note(unused, vocab_size))
    # Recorded once the sizes agree, so that a later change to the files is caught on load.
    _write_json(os.path.join(out_dir, META_FILE), {**meta, "vocab_size": tok.vocab_size})
    return tok, hf_tok

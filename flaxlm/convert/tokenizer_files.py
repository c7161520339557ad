"""Tokenizer files both ways: a flaxlm tokenizer dir ↔ the files `AutoTokenizer` loads.

Both directions end with a check that the two tokenizers give the same ids on real text and agree
on the special ids and the vocabulary size. HF tokenizers are only ever built with
`AutoTokenizer.from_pretrained(directory)`: in transformers 5, constructing `XLMRobertaTokenizer`
or `BertTokenizerFast` from a `vocab_file` silently yields a 5-token vocabulary.
"""

from __future__ import annotations

import json
import os
import shutil

from flaxlm.convert.safe_load import check_tokenizer_config, confined, read_json
from flaxlm.data.tokenizers import META_FILE, SP_MODEL_FILE, VOCAB_FILE, Tokenizer, load_tokenizer
from flaxlm.errors import FlaxlmError

XLMR_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                 "sep_token": "</s>", "pad_token": "<pad>", "cls_token": "<s>",
                 "mask_token": "<mask>"}
BERT_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                 "cls_token": "[CLS]", "mask_token": "[MASK]"}

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
                   model_max_length: int) -> None:
    if kind == "sentencepiece":
        specials, config = XLMR_SPECIALS, {"tokenizer_class": "XLMRobertaTokenizer"}
    else:
        specials = BERT_SPECIALS
        # strip_accents written explicitly: BERT's default (None) would follow do_lower_case.
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase,
                  "strip_accents": strip_accents, "tokenize_chinese_chars": True}
    _write_json(os.path.join(out_dir, "tokenizer_config.json"),
                {**config, "model_max_length": model_max_length, **specials})
    _write_json(os.path.join(out_dir, "special_tokens_map.json"), specials)


def load_hf_tokenizer(directory: str):
    from transformers import AutoTokenizer

    check_tokenizer_config(directory)
    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False,
                                             local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FlaxlmError(f"{directory}: transformers cannot load the tokenizer ({e})") from None


def compare(tok: Tokenizer, hf_tok, vocab_size: int, where: str) -> None:
    """Same vocabulary size, special ids and ids on `SAMPLE_TEXTS`, or a FlaxlmError."""
    if len(hf_tok) != vocab_size or tok.vocab_size != vocab_size:
        raise FlaxlmError(f"{where}: tokenizer vocabulary sizes disagree: transformers "
                          f"len(tokenizer)={len(hf_tok)}, flaxlm {tok.vocab_size}, model "
                          f"{vocab_size}")
    specials = {"pad": (hf_tok.pad_token_id, tok.pad_id), "cls": (hf_tok.cls_token_id, tok.cls_id),
                "sep": (hf_tok.sep_token_id, tok.sep_id), "mask": (hf_tok.mask_token_id, tok.mask_id),
                "unk": (hf_tok.unk_token_id, tok.unk_id)}
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


def write_release_tokenizer(tok: Tokenizer, out_dir: str, model_max_length: int):
    """Writes the HF tokenizer files for `tok` into `out_dir`; returns the loaded HF tokenizer."""
    source = SP_MODEL_FILE if tok.kind == "sentencepiece" else VOCAB_FILE
    shutil.copyfile(os.path.join(tok.path, source), os.path.join(out_dir, source))
    _hf_side_files(out_dir, tok.kind, lowercase=tok.lowercase, strip_accents=tok.strip_accents,
                   model_max_length=model_max_length)
    # A fast-tokenizer file, so loading a 250k SentencePiece vocabulary needs no conversion.
    load_hf_tokenizer(out_dir).backend_tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    return load_hf_tokenizer(out_dir)


def _bert_flags(hf_dir: str, tcfg: dict) -> tuple[bool, bool]:
    """(lowercase, strip_accents) as the HF tokenizer applies them."""
    if os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
        # The fast tokenizer file is what transformers actually runs.
        normalizer = read_json(hf_dir, "tokenizer.json").get("normalizer") or {}
        if isinstance(normalizer, dict) and normalizer.get("type") == "BertNormalizer":
            lowercase = bool(normalizer.get("lowercase", True))
            strip = normalizer.get("strip_accents")
            return lowercase, lowercase if strip is None else bool(strip)
    lowercase = bool(tcfg.get("do_lower_case", True))
    strip = tcfg.get("strip_accents")
    return lowercase, lowercase if strip is None else bool(strip)


def import_tokenizer(hf_dir: str, out_dir: str, arch: str, vocab_size: int,
                     model_max_length: int) -> tuple[Tokenizer, object]:
    """A flaxlm tokenizer dir built from an HF checkpoint's tokenizer files, checked against it.
    Returns (flaxlm tokenizer, the checkpoint's transformers tokenizer)."""
    tcfg = check_tokenizer_config(hf_dir)
    os.makedirs(out_dir, exist_ok=True)
    if arch == "xlmr":
        source = os.path.join(hf_dir, SP_MODEL_FILE)
        if not os.path.exists(source):
            raise FlaxlmError(f"{source}: not found; importing an XLM-R tokenizer needs the "
                              "original SentencePiece model (tokenizer.json alone is not supported)")
        import sentencepiece as spm

        shutil.copyfile(confined(hf_dir, SP_MODEL_FILE, source),
                        os.path.join(out_dir, SP_MODEL_FILE))
        sp = spm.SentencePieceProcessor(model_file=os.path.join(out_dir, SP_MODEL_FILE))
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(sp.serialized_model_proto())
        lowercase = proto.normalizer_spec.name.endswith("_cf")
        sp_size = sp.get_piece_size()
        meta = {"kind": "sentencepiece", "lowercase": lowercase, "strip_accents": False,
                "vocab_size": sp_size + 2,
                "special_ids": {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": sp_size + 1}}
        strip = False
    else:
        source = os.path.join(hf_dir, VOCAB_FILE)
        if not os.path.exists(source):
            raise FlaxlmError(f"{source}: not found; importing a BERT tokenizer needs vocab.txt")
        shutil.copyfile(confined(hf_dir, VOCAB_FILE, source), os.path.join(out_dir, VOCAB_FILE))
        lowercase, strip = _bert_flags(hf_dir, tcfg)
        with open(os.path.join(out_dir, VOCAB_FILE), encoding="utf-8") as f:
            tokens = f.read().splitlines()
        ids = {t: i for i, t in enumerate(tokens)}
        names = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
        meta = {"kind": "wordpiece", "lowercase": lowercase, "strip_accents": strip,
                "vocab_size": len(tokens),
                "special_ids": {k: ids[v] for k, v in names.items() if v in ids}}
    _write_json(os.path.join(out_dir, META_FILE), meta)
    _hf_side_files(out_dir, meta["kind"], lowercase=lowercase, strip_accents=strip,
                   model_max_length=model_max_length)
    tok, hf_tok = load_tokenizer(out_dir), load_hf_tokenizer(hf_dir)
    compare(tok, hf_tok, vocab_size, f"{hf_dir} → {out_dir}")
    return tok, hf_tok

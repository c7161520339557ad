"""Releases as they ship: more embedding rows than tokenizer ids, and tokenizers kept only as
`tokenizer.json` (a Unigram file in the real XLM-R format: a `Precompiled` charsmap without a rule
name, then the collapse of repeated spaces; and WordPiece). Import keeps the extra rows, export
gives them back bit for bit, pruning drops them and edits `tokenizer.json` vocabularies."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from transformers import AutoTokenizer

from flaxlm.convert.commands import export, import_hf
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from tests.conftest import IT_EVAL
from tests.convert.conftest import TOL, assert_same_weights, make_hf_dir, tokenizers  # noqa: F401
from tests.vocab.conftest import prune

EXTRA_ROWS = 7


def _paragraphs(path: str, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()][:n]


def xlmr_format_tokenizer_json(hf_dir) -> None:
    """Rewrites the converter's tokenizer.json as the real XLM-R hub file is laid out:
    Sequence[Precompiled(charsmap), Replace(" {2,}", " ")] and a Metaspace pre-tokenizer, with no
    sentencepiece.bpe.model beside it."""
    path = os.path.join(hf_dir, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    norm = data["normalizer"]
    precompiled = [n for n in norm.get("normalizers", [norm]) if n["type"] == "Precompiled"]
    assert len(precompiled) == 1 and precompiled[0]["precompiled_charsmap"]
    data["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            precompiled[0], {
                "type": "Replace",
                "pattern": {
                    "Regex": " {2,}"
                },
                "content": " "
            }
        ]
    }
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.remove(os.path.join(hf_dir, "sentencepiece.bpe.model"))


def assert_covered_text_tokenizes_as_before(original, pruned, out, uncase: bool) -> None:
    """On Italian text (lowercased for `uncase`) that the original cuts into kept pieces, the
    pruned tokenizer gives the same pieces, except, uncased, where it uses a lowercase piece the
    original never had (uncasing "Unix" adds "unix", which longest-match or Viterbi may prefer)."""
    with open(out / "pruned_ids.json", encoding="utf-8") as f:
        sources = json.load(f)["sources"]
    new_of_old = {old: new for new, ids in enumerate(sources) for old in ids}
    known = set(original.convert_ids_to_tokens(range(len(original))))
    novel = {
        j
        for j, piece in enumerate(pruned.convert_ids_to_tokens(range(len(pruned))))
        if piece not in known
    }
    assert bool(novel) == uncase
    texts = [t.lower() if uncase else t for t in _paragraphs(IT_EVAL, 300)]
    covered, same = 0, 0
    for text, old_ids in zip(texts, original(texts, add_special_tokens=False)["input_ids"]):
        if all(i in new_of_old for i in old_ids):
            covered += 1
            new_ids = pruned(text, add_special_tokens=False)["input_ids"]
            same += new_ids == [new_of_old[i] for i in old_ids]
            assert new_ids == [new_of_old[i] for i in old_ids] or novel & set(new_ids), text
    assert covered > 50 and same > 0.5 * covered, (covered, same)


@pytest.fixture(scope="module")
def hf_xlmr_json_only(tmp_path_factory, it_es_tokenizer) -> str:
    """A random XLMRobertaForMaskedLM with 7 rows more than its tokenizer, which ships only an
    XLM-R-format tokenizer.json."""
    path = tmp_path_factory.mktemp("hf") / "xlmr"
    make_hf_dir(path, "xlmr", it_es_tokenizer, hidden=32, heads=2, intermediate=64, type_vocab=1,
                max_pos=66, extra_rows=EXTRA_ROWS)
    xlmr_format_tokenizer_json(path)
    return str(path)


def test_extra_rows_import_as_they_are_and_export_bitwise(hf_xlmr_json_only, tmp_path, caplog):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    with caplog.at_level(logging.WARNING):
        result = import_hf(hf_xlmr_json_only, str(run))
    tok = load_tokenizer(str(run / "tokenizer"))
    assert result["unused_rows"] == EXTRA_ROWS and result["logits_max_abs_diff"] <= TOL
    assert (f"{EXTRA_ROWS} of the model's {tok.vocab_size + EXTRA_ROWS} embedding rows are never "
            "produced by the tokenizer") in caplog.text
    export(str(run), str(bundle))
    assert_same_weights(hf_xlmr_json_only, bundle)
    assert len(AutoTokenizer.from_pretrained(str(bundle))) == tok.vocab_size
    assert (f"| vocabulary | {tok.vocab_size:,} tokens (SentencePiece, XLM-R id layout); "
            f"{tok.vocab_size + EXTRA_ROWS:,} embedding rows, {EXTRA_ROWS} of them never produced "
            "by the tokenizer |") in (bundle / "README.md").read_text()


def test_fewer_rows_than_tokens_is_refused(tmp_path, it_es_tokenizer):
    hf = tmp_path / "hf"
    make_hf_dir(hf, "xlmr", it_es_tokenizer, hidden=32, heads=2, intermediate=64, type_vocab=1,
                max_pos=66, extra_rows=-3)
    with pytest.raises(
            FlaxlmError, match=r"tokenizer has 1000 tokens but the model embeds only "
            r"997 rows; ids 997..999 would have no embedding"):
        import_hf(str(hf), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("uncase", [False, True], ids=["cased", "uncased"])
def test_tokenizer_json_only_unigram_prunes_and_drops_the_extra_rows(hf_xlmr_json_only, tmp_path,
                                                                     uncase):
    """The pruned tokenizer is a sentencepiece.bpe.model that AutoTokenizer loads. Cased: on text
    the original cuts into kept pieces it cuts identically. Uncased: it cuts any text as the
    lowercased text, and that as the original does, except where it uses a lowercase piece the
    original never had (uncasing "Unix" adds "unix")."""
    out = tmp_path / "pruned"
    report = prune(hf_xlmr_json_only, out, uncase=uncase)
    original = AutoTokenizer.from_pretrained(hf_xlmr_json_only)
    pruned = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    assert report["before"]["unused_rows"] == EXTRA_ROWS
    assert report["before"]["vocab"] == len(original) and report["after"]["vocab"] == len(pruned)
    with open(out / "config.json", encoding="utf-8") as f:
        assert json.load(f)["model"]["vocab_size"] == len(pruned)  # the extra rows are gone
    assert (out / "tokenizer" / "sentencepiece.bpe.model").exists()

    assert_covered_text_tokenizes_as_before(original, pruned, out, uncase)
    if uncase:
        mixed = _paragraphs(IT_EVAL, 40)
        assert any(t != t.lower() for t in mixed)
        assert (pruned(mixed, add_special_tokens=False)["input_ids"] == pruned(
            [t.lower() for t in mixed], add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("uncase", [False, True], ids=["cased", "uncased"])
def test_tokenizer_json_only_wordpiece_prunes(tmp_path, tokenizers, uncase):
    hf = tmp_path / "hf"
    make_hf_dir(hf, "bert", tokenizers["wp_cased"], hidden=32, heads=2, intermediate=37,
                type_vocab=2, extra_rows=EXTRA_ROWS)
    os.remove(hf / "vocab.txt")
    out = tmp_path / "pruned"
    report = prune(str(hf), out, uncase=uncase)
    assert report["before"]["unused_rows"] == EXTRA_ROWS
    pruned = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    assert (out / "tokenizer" / "vocab.txt").exists() and len(pruned) == report["after"]["vocab"]
    assert_covered_text_tokenizes_as_before(AutoTokenizer.from_pretrained(str(hf)), pruned, out,
                                            uncase)


def test_charsmap_reads_back_and_lowercases_like_the_tokenizers_library(it_es_tokenizer):
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import normalizers

    from flaxlm.vocab import charsmap

    proto = sentencepiece_model_pb2.ModelProto()
    with open(os.path.join(it_es_tokenizer, "sentencepiece.bpe.model"), "rb") as f:
        proto.ParseFromString(f.read())
    blob = proto.normalizer_spec.precompiled_charsmap
    rules = charsmap.decompile(blob, "test")
    assert charsmap.compile_rules(rules) == blob  # read back exactly
    source = normalizers.Precompiled(list(blob))
    lower = normalizers.Precompiled(list(charsmap.lowercased(blob, "test")))
    texts = ["ROMA È la Capitale d'ITALIA, Città ΣΟΦΌΣ", "Ｆｕｌｌ ＷＩＤＴＨ ﬁ Ǆ ẞ İstanbul"]
    for text in texts + [chr(c) for c in range(0x20, 0x2000)]:
        # Character by character: a final Σ becomes σ, as the charsmap has no context.
        expected = "".join(c.lower() for c in source.normalize_str(text))
        assert lower.normalize_str(text) == expected, repr(text)

"""Hugging Face tokenizers that ship only `tokenizer.json`: import, whole-word starts, export,
and a checkpoint whose tokenizer lives in another directory (mMiniLMv2 + XLM-R's)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tokenizers as hf_tokenizers
from transformers import AutoTokenizer

from flaxlm import cli
from flaxlm.convert.commands import export, import_hf
from flaxlm.convert.tokenizer_files import import_tokenizer
from flaxlm.data.tokenizers import load_tokenizer, train_tokenizer
from flaxlm.errors import FlaxlmError
from tests.conftest import IT_EVAL, IT_TRAIN
from tests.convert.conftest import TOL, make_hf_dir

HF_MODEL_TYPE = {"xlmr": "xlm-roberta", "bert": "bert"}
# (kind, arch, train_tokenizer flags). The cased WordPiece case holds a tokenizer.json that does
# not lowercase, yet with no tokenizer_config.json transformers 5 lowercases (BertTokenizer's
# default): flaxlm must do what AutoTokenizer does, not what the file says.
CASES = {
    "unigram": ("unigram", "xlmr", {}),
    "wordpiece_uncased": ("wordpiece", "bert", {
        "lowercase": True,
        "strip_accents": True
    }),
    "wordpiece_cased_file": ("wordpiece", "bert", {}),
}


@pytest.fixture(scope="module")
def tokenizers_corpus(tmp_path_factory):
    with open(IT_TRAIN, encoding="utf-8") as f:
        lines = f.read().split("\n")[:1500]
    path = tmp_path_factory.mktemp("corpus") / "it.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def eval_lines():
    with open(IT_EVAL, encoding="utf-8") as f:
        return [line for line in f.read().split("\n") if line.strip()]


def tokenizer_json_only(trained_dir: str, hf_dir, arch: str) -> None:
    """A hub-style directory: tokenizer.json as transformers saves it, plus the model config."""
    AutoTokenizer.from_pretrained(trained_dir).save_pretrained(str(hf_dir))
    for name in os.listdir(hf_dir):
        if name != "tokenizer.json":
            os.remove(os.path.join(hf_dir, name))
    (hf_dir / "config.json").write_text(json.dumps({"model_type": HF_MODEL_TYPE[arch]}))


def hf_word_starts(encoding, i: int) -> list[bool]:
    word_ids = encoding.word_ids(i)
    return [j == 0 or word_ids[j] != word_ids[j - 1] for j in range(len(word_ids))]


@pytest.mark.parametrize("case", sorted(CASES))
def test_tokenizer_json_only_matches_autotokenizer_on_the_italian_corpus(
        case, tmp_path, tokenizers_corpus, eval_lines):
    kind, arch, flags = CASES[case]
    train_tokenizer([tokenizers_corpus], vocab_size=2000, kind=kind, out_dir=str(tmp_path / "t"),
                    **flags)
    hf_dir = tmp_path / "hf"
    tokenizer_json_only(str(tmp_path / "t"), hf_dir, arch)
    hf = AutoTokenizer.from_pretrained(str(hf_dir))

    tok, _ = import_tokenizer(str(hf_dir), str(tmp_path / "out"), arch, len(hf), 512)
    # No model file: the flaxlm tokenizer runs tokenizer.json itself.
    assert sorted(n for n in os.listdir(tmp_path / "out") if n.endswith((".model", ".txt"))) == []
    assert tok.kind == ("sentencepiece" if kind == "unigram" else "wordpiece")
    assert (tok.pad_id, tok.mask_id, tok.vocab_size) == (hf.pad_token_id, hf.mask_token_id, len(hf))

    theirs = hf(eval_lines, add_special_tokens=False)
    ours = load_tokenizer(str(tmp_path / "out")).encode_batch(eval_lines)
    multi_piece_words = 0
    for i, (ids, starts) in enumerate(ours):
        assert ids.tolist() == theirs["input_ids"][i], eval_lines[i]
        assert starts.tolist() == hf_word_starts(theirs, i), eval_lines[i]
        multi_piece_words += int((~starts).sum())
    # Word starts that are all True would pass a weaker test: words do span several pieces here.
    assert multi_piece_words > 1000
    if case == "wordpiece_cased_file":
        upper = tok.encode_batch([eval_lines[0].upper()])[0][0]
        assert tok.lowercase and upper.tolist() == ours[0][0].tolist()


def test_unknown_tokenizer_model_is_refused(tmp_path, tokenizers_corpus):
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    bpe = hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE(unk_token="<unk>"))
    bpe.train([tokenizers_corpus],
              hf_tokenizers.trainers.BpeTrainer(
                  vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                  show_progress=False))
    bpe.save(str(hf_dir / "tokenizer.json"))
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    with pytest.raises(FlaxlmError, match="tokenizer.json: a BPE tokenizer; flaxlm supports"):
        import_tokenizer(str(hf_dir), str(tmp_path / "out"), "xlmr", 300, 512)


def test_import_export_of_a_checkpoint_with_only_tokenizer_json(tmp_path, tokenizers):
    hf_dir = tmp_path / "hf"
    make_hf_dir(hf_dir, "xlmr", tokenizers["sp"], hidden=32, heads=4, intermediate=37, type_vocab=1)
    os.remove(hf_dir / "sentencepiece.bpe.model")
    result = import_hf(str(hf_dir), str(tmp_path / "run"))
    assert result["logits_max_abs_diff"] <= TOL
    assert not (tmp_path / "run" / "tokenizer" / "sentencepiece.bpe.model").exists()

    export(str(tmp_path / "run"), str(tmp_path / "bundle"))
    lines = ["Il sistema Linux è una piattaforma.", "Perché Città? São Paulo."]
    source = hf_tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    bundle = hf_tokenizers.Tokenizer.from_file(str(tmp_path / "bundle" / "tokenizer.json"))
    expected = [e.ids for e in source.encode_batch(lines)]
    assert [e.ids for e in bundle.encode_batch(lines)] == expected


def test_tokenizer_from_another_directory(tmp_path, tokenizers, capsys):
    """mMiniLMv2: weights and config only; the tokenizer is XLM-R's, given with --tokenizer."""
    hf_dir, tok_dir = tmp_path / "minilm", tmp_path / "xlmr_tokenizer"
    make_hf_dir(hf_dir, "xlmr", tokenizers["sp"], hidden=32, heads=4, intermediate=37, type_vocab=1)
    tok_dir.mkdir()
    for name in ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        if (hf_dir / name).exists():
            shutil.move(str(hf_dir / name), str(tok_dir / name))

    with pytest.raises(FlaxlmError, match="no tokenizer .*pass --tokenizer DIR"):
        import_hf(str(hf_dir), str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()

    args = [
        "import", "--hf",
        str(hf_dir), "--tokenizer",
        str(tok_dir), "--out",
        str(tmp_path / "run")
    ]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert "imported" in capsys.readouterr().out
    tok = load_tokenizer(str(tmp_path / "run" / "tokenizer"))
    reference = load_tokenizer(tokenizers["sp"])
    text = ["Il sistema Linux è una piattaforma informatica."]
    np.testing.assert_array_equal(tok.encode_batch(text)[0][0], reference.encode_batch(text)[0][0])


def test_vocab_txt_import_follows_the_normalizer_transformers_builds(tmp_path, tokenizers,
                                                                     eval_lines):
    """tokenizer.json says cased, tokenizer_config.json says nothing: transformers 5 lowercases
    (BertTokenizer's default), and so must the imported vocab.txt tokenizer."""
    hf_dir = tmp_path / "hf"
    AutoTokenizer.from_pretrained(tokenizers["wp_cased"]).save_pretrained(str(hf_dir))
    shutil.copyfile(os.path.join(tokenizers["wp_cased"], "vocab.txt"), hf_dir / "vocab.txt")
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    for key in ("do_lower_case", "strip_accents"):
        config.pop(key, None)
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(config))
    hf = AutoTokenizer.from_pretrained(str(hf_dir))

    tok, _ = import_tokenizer(str(hf_dir), str(tmp_path / "out"), "bert", len(hf), 512)
    assert (tmp_path / "out" / "vocab.txt").exists() and tok.lowercase and tok.strip_accents
    theirs = hf(eval_lines[:100], add_special_tokens=False)["input_ids"]
    assert [ids.tolist() for ids, _ in tok.encode_batch(eval_lines[:100])] == theirs

import json
import os

import numpy as np
import pytest
import transformers

from flaxlm.data.tokenizers import load_tokenizer, train_tokenizer
from flaxlm.errors import FlaxlmError
from tests.conftest import IT_EVAL

MIXED = [
    "Perché IL Sistema è GIÀ più Veloce? Così dicono a Forlì.",
    "Città, università: ÀÈÌÒÙ àèìòù.",
]


def _hf_ids(hf, texts):
    return [np.asarray(ids) for ids in hf(texts, add_special_tokens=True)["input_ids"]]


def _assert_same_ids(tok, hf, texts):
    for ours, theirs in zip(tok.encode_batch(texts), _hf_ids(hf, texts)):
        np.testing.assert_array_equal(np.concatenate([[tok.cls_id], ours[0], [tok.sep_id]]), theirs)


def test_unigram_has_xlmr_ids_in_transformers(sp_tokenizer, eval_sentences):
    hf = transformers.AutoTokenizer.from_pretrained(sp_tokenizer.path)
    assert type(hf).__name__.startswith("XLMRobertaTokenizer")
    # Guards against transformers silently building a tiny vocabulary from the model file.
    assert len(hf) == sp_tokenizer.vocab_size == 2000
    assert (hf.cls_token_id, hf.pad_token_id, hf.sep_token_id, hf.unk_token_id) == (0, 1, 2, 3)
    assert hf.mask_token_id == sp_tokenizer.mask_id == sp_tokenizer.vocab_size - 1
    assert sp_tokenizer.special_ids == (0, 1, 2, 3, sp_tokenizer.mask_id)
    _assert_same_ids(sp_tokenizer, hf, eval_sentences + MIXED + ["字 unknown ☃ chars"])


def test_unigram_word_starts_are_pieces_with_the_space_marker(sp_tokenizer, eval_sentences):
    hf = transformers.AutoTokenizer.from_pretrained(sp_tokenizer.path)
    for ids, starts in sp_tokenizer.encode_batch(eval_sentences[:10]):
        pieces = hf.convert_ids_to_tokens(ids.tolist())
        assert starts.tolist() == [i == 0 or p.startswith("▁") for i, p in enumerate(pieces)]


def test_unigram_lowercase_agrees_with_transformers(it_slice, tmp_path):
    tok = train_tokenizer([it_slice], vocab_size=800, kind="unigram", out_dir=str(tmp_path),
                          lowercase=True)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(hf) == tok.vocab_size and tok.lowercase
    _assert_same_ids(tok, hf, MIXED)
    assert tok.encode_batch(["CASA"])[0][0].tolist() == tok.encode_batch(["casa"])[0][0].tolist()


def test_wordpiece_has_bert_ids_in_transformers(wp_tokenizer, eval_sentences):
    hf = transformers.BertTokenizerFast.from_pretrained(wp_tokenizer.path)
    assert len(hf) == wp_tokenizer.vocab_size == 2000
    assert [
        hf.pad_token_id,
        hf.unk_token_id,
        hf.cls_token_id,
        hf.sep_token_id,
        hf.mask_token_id,
    ] == [0, 1, 2, 3, 4]
    assert (wp_tokenizer.pad_id, wp_tokenizer.mask_id) == (0, 4)
    _assert_same_ids(wp_tokenizer, hf, eval_sentences + MIXED)
    auto = transformers.AutoTokenizer.from_pretrained(wp_tokenizer.path)
    _assert_same_ids(wp_tokenizer, auto, MIXED)


def test_wordpiece_word_starts_are_tokens_without_hashes(wp_tokenizer, eval_sentences):
    vocab = open(os.path.join(wp_tokenizer.path, "vocab.txt"), encoding="utf-8").read().splitlines()
    for ids, starts in wp_tokenizer.encode_batch(eval_sentences[:10]):
        assert starts.tolist() == [not vocab[i].startswith("##") for i in ids]


@pytest.mark.parametrize("strip_accents", [False, True])
def test_wordpiece_uncased_accent_handling_matches_bert(it_slice, tmp_path, strip_accents):
    tok = train_tokenizer(
        [it_slice],
        vocab_size=800,
        kind="wordpiece",
        out_dir=str(tmp_path),
        lowercase=True,
        strip_accents=strip_accents,
    )
    hf = transformers.BertTokenizerFast.from_pretrained(str(tmp_path))
    _assert_same_ids(tok, hf, MIXED)
    text = "".join(hf.convert_ids_to_tokens(tok.encode_batch(["PERCHÉ"
                                                              ])[0][0].tolist())).replace("##", "")
    assert text == ("perche" if strip_accents else "perché")


def test_metadata_round_trip(sp_tokenizer, wp_tokenizer):
    for tok in (sp_tokenizer, wp_tokenizer):
        meta = json.load(open(os.path.join(tok.path, "flaxlm_tokenizer.json")))
        assert meta["vocab_size"] == tok.vocab_size
        assert meta["special_ids"]["mask"] == tok.mask_id
        again = load_tokenizer(tok.path)
        assert (again.kind, again.special_ids, again.vocab_size) == (
            tok.kind,
            tok.special_ids,
            tok.vocab_size,
        )
        assert os.path.isfile(os.path.join(tok.path, "special_tokens_map.json"))


def test_encode_batch_dtypes_and_edge_texts(tokenizer):
    out = tokenizer.encode_batch(["", "a", "  \t ", "parola"])
    assert len(out) == 4
    for ids, starts in out:
        assert ids.dtype == np.int32 and starts.dtype == np.bool_ and ids.shape == starts.shape
        assert ((ids >= 0) & (ids < tokenizer.vocab_size)).all()
    assert out[0][0].size == 0 and out[1][1][0]


def test_errors_name_the_fault(tmp_path, it_slice):
    with pytest.raises(FlaxlmError, match="flaxlm_tokenizer.json"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "flaxlm_tokenizer.json").write_text('{"kind": "bpe"}')
    with pytest.raises(FlaxlmError, match="'kind'"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(FlaxlmError, match="strip_accents"):
        train_tokenizer(
            [it_slice],
            vocab_size=500,
            kind="unigram",
            out_dir=str(tmp_path / "u"),
            strip_accents=True,
        )
    with pytest.raises(FlaxlmError, match="kind='bpe'"):
        train_tokenizer([it_slice], vocab_size=500, kind="bpe", out_dir=str(tmp_path / "b"))
    with pytest.raises(FlaxlmError, match="missing.txt"):
        train_tokenizer(
            [str(tmp_path / "missing.txt")],
            vocab_size=500,
            kind="wordpiece",
            out_dir=str(tmp_path / "w"),
        )


def test_trained_tokenizer_json_loads_with_tokenizers_alone(tokenizer):
    """An export (or the tokenizer dir itself) needs only the `tokenizers` library: same ids on
    the whole Italian eval text, and the same words as flaxlm's word starts."""
    from tokenizers import Tokenizer as HfTokenizer

    with open(IT_EVAL, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    backend = HfTokenizer.from_file(os.path.join(tokenizer.path, "tokenizer.json"))
    assert backend.get_vocab_size() == tokenizer.vocab_size
    for (ids, starts), enc in zip(tokenizer.encode_batch(lines),
                                  backend.encode_batch(lines, add_special_tokens=False)):
        assert ids.tolist() == enc.ids
        words = enc.word_ids
        assert starts.tolist() == [j == 0 or words[j] != words[j - 1] for j in range(len(words))]


def test_retraining_into_a_directory_replaces_its_tokenizer_json(it_slice, tmp_path):
    train_tokenizer([it_slice], vocab_size=600, kind="unigram", out_dir=str(tmp_path))
    tok = train_tokenizer([it_slice], vocab_size=500, kind="unigram", out_dir=str(tmp_path))
    meta = json.load(open(tmp_path / "tokenizer.json", encoding="utf-8"))
    assert len(meta["model"]["vocab"]) == tok.vocab_size == 500


def test_tokenizer_json_backend_is_used_without_a_model_file(sp_tokenizer, tmp_path):
    import shutil

    shutil.copytree(sp_tokenizer.path, tmp_path / "t")
    os.remove(tmp_path / "t" / "sentencepiece.bpe.model")
    tok = load_tokenizer(str(tmp_path / "t"))
    texts = ["Il sistema è già più veloce, dicono a Forlì.", "字 ☃"]
    for (a, sa), (b, sb) in zip(tok.encode_batch(texts), sp_tokenizer.encode_batch(texts)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(sa, sb)
    assert (tok.special_ids, tok.mask_id) == (sp_tokenizer.special_ids, sp_tokenizer.mask_id)

    meta_path = tmp_path / "t" / "flaxlm_tokenizer.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "kind": "wordpiece"}))
    with pytest.raises(FlaxlmError, match="holds a Unigram model but .* says kind 'wordpiece'"):
        load_tokenizer(str(tmp_path / "t"))
    meta_path.write_text(json.dumps(meta))
    os.remove(tmp_path / "t" / "tokenizer.json")
    with pytest.raises(FlaxlmError, match="neither sentencepiece.bpe.model nor tokenizer.json"):
        load_tokenizer(str(tmp_path / "t"))


def test_damaged_tokenizer_model_is_one_line_naming_the_file(tiny_tokenizer_dir, tmp_path):
    import shutil

    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.errors import FlaxlmError
    damaged = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, damaged)
    model = next(p for p in damaged.iterdir() if p.suffix == ".model")
    model.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(FlaxlmError, match=f"{model.name} cannot be read"):
        load_tokenizer(str(damaged))

import json
import os

import pytest

from flaxlm.data import run_tokenizer
from flaxlm.data.run_tokenizer import check_tokenizer_fits, default_vocab_size, tokenizer_for_run
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from flaxlm.run.workdir import Workdir
from tests.conftest import IT_TRAIN

UNIGRAM_700 = {"kind": "unigram", "vocab_size": 700, "model_vocab_size": 1000}


def own(workdir) -> str:
    return Workdir(str(workdir)).own_tokenizer_dir


def test_trains_once_into_the_workdir_and_reuses_it(it_slice, tmp_path, capsys, monkeypatch):
    workdir = str(tmp_path / "run")
    path = tokenizer_for_run("", [it_slice], own(workdir), **UNIGRAM_700)
    assert path == os.path.join(workdir, "tokenizer")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "trained a unigram tokenizer of 700 tokens" in lines[0]
    assert path in lines[0] and it_slice in lines[0]
    tok = load_tokenizer(path)
    assert tok.vocab_size == 700 and os.path.isfile(os.path.join(path, "tokenizer.json"))
    assert [n for n in os.listdir(workdir) if n.startswith(".tokenizer-")] == []

    def no_training(*args, **kwargs):
        raise AssertionError("a rerun of the workdir retrained its tokenizer")

    monkeypatch.setattr(run_tokenizer, "train_tokenizer", no_training)
    for _ in range(2):
        assert tokenizer_for_run("", [it_slice], own(workdir), kind="wordpiece", vocab_size=900,
                                 model_vocab_size=1000) == path
    assert capsys.readouterr().out == ""
    assert load_tokenizer(path).vocab_size == 700


def test_unset_vocab_size_is_derived_from_the_model_and_the_corpus(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    with open(IT_TRAIN, encoding="utf-8") as f:
        corpus.write_text("\n".join(f.read().split("\n")[:6000]), encoding="utf-8")
    path = tokenizer_for_run("", [str(corpus)], own(str(tmp_path / "run")), kind="unigram",
                             vocab_size=0, model_vocab_size=250_002)
    # 145,678 words: 1,456 entries at 100 words each, rounded down to a multiple of 64.
    assert load_tokenizer(path).vocab_size == 1408
    assert "of 1408 tokens" in capsys.readouterr().out


def test_a_configured_tokenizer_wins(it_slice, tmp_path, monkeypatch):
    monkeypatch.setattr(run_tokenizer, "train_tokenizer", None)
    got = tokenizer_for_run("runs/tok", ["tfds:x"], own(str(tmp_path / "run")), kind="unigram",
                            vocab_size=1, model_vocab_size=1)
    assert got == "runs/tok" and not (tmp_path / "run").exists()


def test_interrupted_training_leaves_nothing_to_reuse(it_slice, tmp_path, monkeypatch):
    def dies(files, *, out_dir, **kwargs):
        open(os.path.join(out_dir, "sentencepiece.bpe.model"), "w").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(run_tokenizer, "train_tokenizer", dies)
    workdir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        tokenizer_for_run("", [it_slice], own(str(workdir)), **UNIGRAM_700)
    assert os.listdir(workdir) == []


def test_a_leftover_partial_tokenizer_dir_is_refused_untouched(it_slice, tmp_path):
    partial = tmp_path / "run" / "tokenizer"
    partial.mkdir(parents=True)
    (partial / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(FlaxlmError, match="exists without flaxlm_tokenizer.json"):
        tokenizer_for_run("", [it_slice], own(str(tmp_path / "run")), **UNIGRAM_700)
    assert os.listdir(partial) == ["vocab.txt"]


def test_sources_that_are_not_text_need_a_tokenizer(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "prepared.json").write_text(
        json.dumps({
            "seq_len": 64,
            "vocab_size": 700,
            "files": [],
            "num_examples": [],
            "tokenizer": "/data/tok-it"
        }))
    workdir = str(tmp_path / "run")
    with pytest.raises(
            FlaxlmError, match=r"prepared shards .*data.tokenizer to the one they "
            r"were prepared with \(/data/tok-it\)"):
        tokenizer_for_run("", [str(shards)], own(workdir), **UNIGRAM_700)
    with pytest.raises(
            FlaxlmError, match="tfds:wikipedia/20230601.it is a TFDS dataset.*"
            "--config.data.tokenizer=DIR"):
        tokenizer_for_run("", ["tfds:wikipedia/20230601.it"], own(workdir), **UNIGRAM_700)
    with pytest.raises(FlaxlmError, match="data.train_files are both empty"):
        tokenizer_for_run("", [], own(workdir), **UNIGRAM_700)
    assert not os.path.exists(os.path.join(workdir, "tokenizer"))


def test_default_vocab_size_follows_the_preset_capped_by_the_corpus(tmp_path):
    # The Italian sample has 384,519 words: enough for tiny's 1,000, not for XLM-R's 250,002.
    assert default_vocab_size(preset("tiny").vocab_size, [IT_TRAIN]) == 1000
    assert default_vocab_size(preset("xlmr-base").vocab_size, [IT_TRAIN]) == 3840
    small = tmp_path / "small.txt"
    small.write_text("una frase breve\n" * 50)
    assert default_vocab_size(250_002, [str(small)]) == 1000
    assert default_vocab_size(600, [str(small)]) == 600


def test_vocabulary_larger_than_the_model_is_refused(sp_tokenizer):
    model = preset("tiny", vocab_size=sp_tokenizer.vocab_size)
    check_tokenizer_fits(sp_tokenizer, model, model_source="preset tiny")
    small = preset("tiny", vocab_size=sp_tokenizer.vocab_size - 1)
    with pytest.raises(FlaxlmError) as e:
        check_tokenizer_fits(sp_tokenizer, small, model_source="init_from=runs/x/config.json")
    message = str(e.value)
    assert f"has {sp_tokenizer.vocab_size} tokens" in message and "runs/x/config.json" in message
    assert f"vocab_size={sp_tokenizer.vocab_size - 1}" in message and sp_tokenizer.path in message


def test_pad_id_that_differs_from_the_model_is_refused(wp_tokenizer):
    # WordPiece puts [UNK] at 1, where tiny (and every XLM-R preset) pads.
    model = preset("tiny", vocab_size=wp_tokenizer.vocab_size)
    with pytest.raises(FlaxlmError, match=r"pads with id 0 .*\(preset tiny\) has pad_token_id=1"):
        check_tokenizer_fits(wp_tokenizer, model, model_source="preset tiny")
    check_tokenizer_fits(
        wp_tokenizer,
        preset("tiny", vocab_size=wp_tokenizer.vocab_size, pad_token_id=wp_tokenizer.pad_id),
        model_source="preset tiny")

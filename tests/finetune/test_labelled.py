"""Readers of word-labelled corpora, on sentences cut from the real files (fixtures/README.md)."""

import os

import pytest

from flaxlm.data.labelled import label_vocabulary, read_files, read_sentences
from flaxlm.errors import FlaxlmError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name):
    return os.path.join(FIXTURES, name)


def test_conllu_reads_upos_and_skips_multiword_ranges():
    sentences = read_sentences(fixture("it_isdt-dev-head.conllu"), "conllu")
    assert len(sentences) == 16
    first = sentences[0]
    assert first.words == ("Corriere", "Sport", "da", "pagina", "23", "a", "pagina", "26")
    assert first.labels == ("PROPN", "PROPN", "ADP", "NOUN", "NUM", "ADP", "NOUN", "NUM")
    # The range line `4-5 dal` is not a word: its syntactic words `da` + `il` are.
    assert ("Alcune", "chiamate", "partirono", "da", "il", "Quirinale",
            ".") in [s.words for s in sentences]
    assert all("-" not in label for s in sentences for label in s.labels)
    assert all(len(s.words) == len(s.labels) for s in sentences)


def test_conllu_skips_empty_nodes():
    [sentence] = read_sentences(fixture("it_isdt-dev-empty-node.conllu"), "conllu")
    with open(fixture("it_isdt-dev-empty-node.conllu"), encoding="utf-8") as f:
        ids = [line.split("\t")[0] for line in f if line[:1].isdigit()]
    words = [i for i in ids if i.isdigit()]
    assert "32.1" in ids and len(sentence.words) == len(words)


def test_conll2002_reads_token_pos_label():
    sentences = read_sentences(fixture("esp-train-head.txt"), "conll2002")
    assert len(sentences) == 40
    assert sentences[0].words[:3] == ("Melbourne", "(", "Australia")
    assert sentences[0].labels[:3] == ("B-LOC", "O", "B-LOC")
    assert label_vocabulary(sentences) == ("B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC",
                                           "I-ORG", "I-PER", "O")


def test_wikiner_and_panx():
    wikiner = read_sentences(fixture("wikiner-sample.txt"), "wikiner")
    assert [len(s.words) for s in wikiner] == [6, 8]
    assert wikiner[0].words[:2] == ("Giuseppe", "Verdi") and wikiner[0].labels[4] == "I-LOC"
    panx = read_sentences(fixture("panx-sample.tsv"), "panx")
    assert panx[0].words == ("Giuseppe", "Verdi", "nacque", "a", "Busseto")
    assert panx[1].labels == ("B-LOC", "O", "O")
    assert len(read_files((fixture("panx-sample.tsv"), ) * 2, "panx")) == 4


@pytest.mark.parametrize("fmt, text, line, words", [
    ("conll2002", "El DA O\nAbogado NC\n", 2, "3 columns"),
    ("conllu", "1\tCorriere\tCorriere\tPROPN\n", 1, "10 tab-separated"),
    ("conllu", "1\tCorriere\tCorriere\t_\tSP\t_\t0\troot\t0:root\t_\n", 1, "UPOS"),
    ("wikiner", "Giuseppe|SP|I-PER Verdi|SP\n", 1, "word 2"),
    ("panx", "it:Giuseppe\tB-PER\nit:Verdi\n", 2, "lang:token<TAB>label"),
    ("panx", "Giuseppe\tB-PER\n", 1, "'lang:' prefix"),
])
def test_malformed_line_names_file_and_line(tmp_path, fmt, text, line, words):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FlaxlmError, match=rf"bad\.txt:{line}: .*{words}"):
        read_sentences(str(path), fmt)


def test_empty_file_and_unknown_format(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(FlaxlmError, match=r"empty\.txt: no sentences"):
        read_sentences(str(path), "conll2002")
    with pytest.raises(FlaxlmError, match="not found"):
        read_sentences(str(tmp_path / "missing.txt"), "conll2002")
    with pytest.raises(FlaxlmError, match="'iob' is not known"):
        read_sentences(str(path), "iob")

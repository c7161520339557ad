import warnings

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from flaxlm.data import corpus_files, sources
from flaxlm.errors import FlaxlmError

WIKI = "tfds:wikipedia/20230601.it:train"


def _docs(*specs):
    return list(sources.iter_documents(specs))


def test_documents_are_blocks_of_lines_between_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbfuno\r\ndue  \r\n\r\n \t \n\ntre\n\n\nquattro")
    assert _docs(str(path)) == [["uno", "due"], ["tre"], ["quattro"]]


def test_globs_and_directories_read_sorted_files(tmp_path):
    (tmp_path / "b.txt").write_text("bi\n")
    (tmp_path / "a.txt").write_text("a1\n\na2\n")
    (tmp_path / ".hidden").write_text("no\n")
    assert _docs(str(tmp_path / "*.txt")) == [["a1"], ["a2"], ["bi"]]
    assert _docs(str(tmp_path)) == [["a1"], ["a2"], ["bi"]]


@pytest.mark.parametrize("make", ["missing", "empty_dir", "no_match", "blank_file"])
def test_bad_corpora_raise_naming_the_path(tmp_path, make):
    spec = {
        "missing": tmp_path / "nope.txt",
        "empty_dir": tmp_path / "empty",
        "no_match": tmp_path / "*.corpus",
        "blank_file": tmp_path / "blank.txt",
    }[make]
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(FlaxlmError, match=str(spec).replace("*", r"\*")):
        _docs(str(spec))


def test_invalid_utf8_and_nul_are_counted_once_and_the_rest_is_used(tmp_path):
    path = tmp_path / "dirty.txt"
    path.write_bytes(b"buona riga\ncattiva \xff\xfe riga\n\nnul\x00 qui\n\xc3\xa8 ok\n\xe2\x82\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = _docs(str(path))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert str(path) in messages[0] and "3 line(s)" in messages[0] and "line 2" in messages[0]
    assert docs == [["buona riga", "cattiva \ufffd\ufffd riga"], ["nul qui", "è ok", "\ufffd"]]


def test_a_single_10mb_line_is_cut_into_bounded_paragraphs(tmp_path):
    words = ("parola " * 1_500_000).encode()[:10_000_000]
    path = tmp_path / "huge.txt"
    path.write_bytes(words + b"x" * 250_000)  # ends with an unbreakable 250k-char run
    (paragraphs, ) = _docs(str(path))
    assert max(map(len, paragraphs)) <= corpus_files.MAX_PARAGRAPH_CHARS
    text = "".join(paragraphs).replace(" ", "")
    assert text == (words + b"x" * 250_000).decode().replace(" ", "")


def test_files_without_blank_lines_are_cut_into_bounded_documents(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_files, "MAX_DOCUMENT_CHARS", 10)
    path = tmp_path / "lines.txt"
    path.write_text("abcd\nefgh\nijkl\nmnop\n\nqr\n")
    assert _docs(str(path)) == [["abcd", "efgh", "ijkl"], ["mnop"], ["qr"]]


def test_split_long_text_prefers_spaces():
    assert corpus_files.split_long_text("aaa bbb ccc", max_chars=5) == ["aaa", "bbb", "ccc"]
    assert corpus_files.split_long_text("abcdefgh", max_chars=3) == ["abc", "def", "gh"]


def _articles(texts):
    def as_dataset(self, *args, **kwargs):
        return tf.data.Dataset.from_generator(
            lambda: ({
                "text": t,
                "title": "t"
            } for t in texts),
            output_signature={
                "text": tf.TensorSpec([], tf.string),
                "title": tf.TensorSpec([], tf.string),
            },
        )

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_tfds_wikipedia_articles_become_documents_of_paragraphs():
    with _articles(
        ["Roma\n\nRoma è la capitale.\nHa molti abitanti.", "  \n", "Milano\nÈ una città."]):
        assert _docs(WIKI) == [
            ["Roma", "Roma è la capitale.", "Ha molti abitanti."],
            ["Milano", "È una città."],
        ]


def test_tfds_mock_random_text_is_read():
    with tfds.testing.mock_data(num_examples=4):
        docs = _docs("tfds:wikipedia/20230601.it")
    assert len(docs) == 4 and all(p for doc in docs for p in doc)


def test_tfds_errors_name_the_spec():
    with pytest.raises(FlaxlmError, match="tfds:no_such_dataset_xyz"):
        _docs("tfds:no_such_dataset_xyz")
    with pytest.raises(FlaxlmError, match="tfds:NAME"):
        _docs("tfds:")

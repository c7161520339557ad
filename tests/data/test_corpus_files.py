"""Corpus files as users hold them (Parquet, JSON lines, text; gzip/zstd), made here from the
Italian sample: each format gives the documents of the same text, anything else is refused."""

import gzip
import json
import os
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flaxlm import cli
from flaxlm.data import corpus_files, prepare, sources
from flaxlm.data.tokenizers import train_tokenizer
from flaxlm.errors import FlaxlmError
from tests.conftest import IT_TRAIN

DOCS = 40


@pytest.fixture(scope="module")
def it_docs():
    """The first documents of data/it/train.txt, each a list of paragraphs."""
    return list(sources.iter_documents([IT_TRAIN]))[:DOCS]


def write_text(path, docs):
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    return str(path)


def write_parquet(path, docs, row_group_size=7, column="text"):
    table = pa.table({
        "id": [str(i) for i in range(len(docs))],
        "title": [d[0][:20] for d in docs],
        column: ["\n".join(d) for d in docs]
    })
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return str(path)


def write_jsonl(path, docs, field="text"):
    rows = b"".join(
        json.dumps({
            "id": i,
            field: "\n".join(d)
        }, ensure_ascii=False).encode() + b"\n" for i, d in enumerate(docs))
    name = str(path)
    if name.endswith(".gz"):
        with gzip.open(name, "wb") as f:
            f.write(rows)
    elif name.endswith(".zst"):
        with pa.CompressedOutputStream(name, "zstd") as f:
            f.write(rows)
    else:
        path.write_bytes(rows)
    return name


def _docs(*specs, **kw):
    return list(sources.iter_documents(specs, **kw))


@pytest.mark.parametrize("name", ["c.parquet", "c.jsonl", "c.jsonl.gz", "c.jsonl.zst", "c.txt.gz"])
def test_every_format_gives_the_documents_of_the_text(tmp_path, it_docs, name):
    path = tmp_path / name
    if name.endswith(".parquet"):
        write_parquet(path, it_docs)
    elif ".jsonl" in name:
        write_jsonl(path, it_docs)
    else:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("\n\n".join("\n".join(d) for d in it_docs))
    assert _docs(str(path)) == it_docs


def test_the_content_decides_not_the_name(tmp_path, it_docs):
    # A Parquet file and a gzipped JSON lines file, both named like plain text.
    assert _docs(write_parquet(tmp_path / "wiki.txt", it_docs)) == it_docs
    gz = write_jsonl(tmp_path / "dump.jsonl.gz", it_docs)
    os.rename(gz, tmp_path / "dump")
    assert _docs(str(tmp_path / "dump")) == it_docs


def test_text_field_chooses_the_column_and_a_missing_one_names_what_is_there(tmp_path, it_docs):
    parquet = write_parquet(tmp_path / "w.parquet", it_docs, column="content")
    jsonl = write_jsonl(tmp_path / "o.jsonl.zst", it_docs, field="content")
    assert _docs(parquet, jsonl, text_field="content") == it_docs + it_docs
    with pytest.raises(
            FlaxlmError, match=r"w.parquet: has no column 'text' \(columns: \['id', "
            r"'title', 'content'\]\); set data.text_field"):
        _docs(parquet)
    with pytest.raises(FlaxlmError, match=r"o.jsonl.zst:1: no 'text' field \(fields: "
                       r"\['content', 'id'\]\)"):
        _docs(jsonl)


def test_a_broken_json_line_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "uno"}\n\n{"text": "due"\n')
    with pytest.raises(FlaxlmError, match=r"bad.jsonl:3: not a JSON object"):
        _docs(str(path))


def _zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "ciao " * 1000)
    return str(path)


@pytest.mark.parametrize("make, what", [
    ("zip", "a zip archive"),
    ("random", "binary data"),
    ("gzip_of_binary", "gzip-compressed binary data"),
    ("npy", "a NumPy array"),
])
def test_binary_files_are_refused_in_one_line_naming_the_accepted_formats(tmp_path, make, what):
    rng = np.random.default_rng(0)
    if make == "zip":
        path = _zip(tmp_path / "corpus.txt")
    elif make == "random":
        path = str(tmp_path / "weights.bin")
        (tmp_path / "weights.bin").write_bytes(rng.bytes(100_000))
    elif make == "gzip_of_binary":
        path = str(tmp_path / "c.jsonl.gz")
        with gzip.open(path, "wb") as f:
            f.write(rng.bytes(100_000))
    else:
        path = str(tmp_path / "x.npy")
        np.save(path, np.zeros(1000))
    with pytest.raises(FlaxlmError) as e:
        _docs(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{path}: not a corpus file ({what}")
    assert message.endswith(f"flaxlm reads {corpus_files.ACCEPTED}")


def test_a_directory_of_something_else_is_refused_before_any_reading(tmp_path, it_docs):
    (tmp_path / "a.txt").write_text("testo\n")
    (tmp_path / "model.safetensors").write_bytes((8).to_bytes(8, "little") + b'{"a": 1}' +
                                                 np.zeros(20_000, np.float32).tobytes())
    with pytest.raises(FlaxlmError, match="model.safetensors: not a corpus file"):
        sources.iter_documents([str(tmp_path)])  # not iterated: refused up front


def test_text_with_a_few_broken_bytes_is_still_text(tmp_path):
    path = tmp_path / "dirty.txt"
    path.write_bytes(b"buona riga\ncattiva \xff\xfe riga\n")
    with pytest.warns(UserWarning, match="1 line"):
        assert _docs(str(path)) == [["buona riga", "cattiva \ufffd\ufffd riga"]]


def test_shards_read_disjoint_row_groups_and_files_that_together_are_everything(tmp_path, it_docs):
    parquet = write_parquet(tmp_path / "a.parquet", it_docs[:30], row_group_size=4)  # 8 groups
    jsonl = write_jsonl(tmp_path / "b.jsonl.gz", it_docs[30:])
    shards = [_docs(parquet, jsonl, shard=(i, 3)) for i in range(3)]
    # Units in listing order: a.parquet's row groups 0..7, then b.jsonl.gz; unit u → shard u % 3.
    groups = [it_docs[i:min(i + 4, 30)] for i in range(0, 30, 4)] + [it_docs[30:]]
    for i, shard in enumerate(shards):
        assert shard == [d for u, g in enumerate(groups) if u % 3 == i for d in g]
    with pytest.raises(FlaxlmError, match="shard 3/3"):
        _docs(parquet, shard=(3, 3))


def test_tokenizer_trained_on_parquet_is_the_one_trained_on_the_text(tmp_path, it_docs):
    text = write_text(tmp_path / "c.txt", it_docs)
    parquet = write_parquet(tmp_path / "c.parquet", it_docs)
    a = train_tokenizer([text], vocab_size=500, kind="unigram", out_dir=str(tmp_path / "a"))
    b = train_tokenizer([parquet], vocab_size=500, kind="unigram", out_dir=str(tmp_path / "b"))
    with open(os.path.join(a.path, "sentencepiece.bpe.model"), "rb") as fa, \
            open(os.path.join(b.path, "sentencepiece.bpe.model"), "rb") as fb:
        assert fa.read() == fb.read()


def test_prepare_cli_reads_jsonl_zst_with_a_text_field(tmp_path, it_docs, sp_tokenizer, capsys):
    jsonl = write_jsonl(tmp_path / "o.jsonl.zst", it_docs, field="content")
    out = tmp_path / "prepared"
    assert cli.main([
        "prepare", "--input", jsonl, "--tokenizer", sp_tokenizer.path, "--out",
        str(out), "--seq-len", "32", "--num-shards", "2", "--text-field", "content"
    ]) == 0
    ids, _ = sources.load_prepared([str(out)], seq_len=32, vocab_size=sp_tokenizer.vocab_size)
    want, _ = prepare.pack_corpus([write_text(tmp_path / "c.txt", it_docs)], sp_tokenizer,
                                  seq_len=32)
    np.testing.assert_array_equal(ids, want)
    assert json.loads((out / "prepared.json").read_text())["text_field"] == "content"

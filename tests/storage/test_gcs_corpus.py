"""Corpus files in a bucket: Parquet row groups and zstd JSON lines read from `gs://` globs (the
emulator), sharded by row group, and a zip refused naming its `gs://` path."""

import pytest

from flaxlm import storage
from flaxlm.data import sources
from flaxlm.errors import FlaxlmError
from tests.data.test_corpus_files import _zip, write_jsonl, write_parquet
from tests.storage.conftest import BUCKET

DOCS = [["Primo documento.", "Seconda riga."], ["Secondo."], ["Terzo documento."], ["Quarto."],
        ["Quinto, l'ultimo."]]


def _upload(local, remote):
    with open(local, "rb") as f:
        storage.write_bytes(remote, f.read())


def test_parquet_and_jsonl_zst_in_a_bucket(gcs_emulator, tmp_path):
    root = f"gs://{BUCKET}/corpus"
    _upload(write_parquet(tmp_path / "a.parquet", DOCS[:4], row_group_size=2), f"{root}/a.parquet")
    _upload(write_jsonl(tmp_path / "b.jsonl.zst", DOCS[4:]), f"{root}/b.jsonl.zst")
    assert list(sources.iter_documents([f"{root}/*"])) == DOCS
    # Units: a.parquet's two row groups, then b.jsonl.zst.
    assert list(sources.iter_documents([f"{root}/*"], shard=(1, 2))) == DOCS[2:4]
    _upload(_zip(tmp_path / "c.jsonl"), f"{root}/c.jsonl")
    with pytest.raises(FlaxlmError, match=rf"^{root}/c.jsonl: not a corpus file \(a zip archive\)"):
        sources.iter_documents([root])

"""`flaxlm train` on Parquet and compressed JSON lines (files made here): the same documents as
text give the same losses, a stopped run resumes exactly (also reading its own units,
`data.host_reading=own_units`, refused on another host count), and a binary file stops the run in
one line."""

import json

import numpy as np

from tests.data.test_corpus_files import write_jsonl, write_parquet, write_text
from tests.test_train import _error_line, _losses, _train

DOCS = 60


def _it_docs():
    from flaxlm.data import sources
    from tests.conftest import IT_TRAIN

    return list(sources.iter_documents([IT_TRAIN]))[:DOCS]


def _run(workdir, tokenizer, train, evaluate, *extra):
    return _train(workdir, tokenizer, f"--config.data.train_files={train}",
                  f"--config.data.eval_files={evaluate}", "--config.train.warmup_steps=1",
                  "--config.train.decay_steps=4", "--config.train.checkpoint_every=2", *extra)


def test_parquet_and_jsonl_zst_train_and_resume_like_the_same_text(tmp_path, tiny_tokenizer_dir,
                                                                   capsys):
    docs = _it_docs()
    text = write_text(tmp_path / "c.txt", docs[:50])
    held_out = write_text(tmp_path / "e.txt", docs[50:])
    parquet = write_parquet(tmp_path / "c.parquet", docs[:50], row_group_size=8)
    jsonl = write_jsonl(tmp_path / "e.jsonl.zst", docs[50:])

    assert _run(tmp_path / "text", tiny_tokenizer_dir, text, held_out,
                "--config.train.steps=4") == 0
    # Stopped at step 2 (as if preempted), then resumed to 4, the one host reading its own units
    # (the Parquet file's 7 row groups): with one host that is the stream of every host reading all.
    own = "--config.data.host_reading=own_units"
    workdir = tmp_path / "parquet"
    assert _run(workdir, tiny_tokenizer_dir, parquet, jsonl, own, "--config.train.steps=2") == 0
    assert _run(workdir, tiny_tokenizer_dir, parquet, jsonl, own, "--config.train.steps=4") == 0
    reference, resumed = _losses(tmp_path / "text"), _losses(workdir)
    assert sorted(resumed) == [1, 2, 3, 4]
    np.testing.assert_array_equal([resumed[s] for s in range(1, 5)],
                                  [reference[s] for s in range(1, 5)])

    # As if the workdir had been made by 2 hosts: this 1-host resume is refused in one line.
    config = json.loads((workdir / "config.json").read_text())
    assert config["host_reading"] == "own_units on 1 host"
    config["host_reading"] = "own_units on 2 hosts"
    (workdir / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert _run(workdir, tiny_tokenizer_dir, parquet, jsonl, own, "--config.train.steps=6") == 2
    line = _error_line(capsys)
    assert "host_reading = own_units on 2 hosts but the data now gives own_units on 1 host" in line


def test_a_zip_given_as_train_files_stops_the_run_in_one_line(tmp_path, tiny_tokenizer_dir, capsys):
    from tests.data.test_corpus_files import _zip

    path = _zip(tmp_path / "wiki-it.parquet")
    assert _train(tmp_path / "run", tiny_tokenizer_dir, f"--config.data.train_files={path}",
                  "--config.train.steps=1") == 2
    line = _error_line(capsys)
    assert f"{path}: not a corpus file (a zip archive)" in line and "Parquet" in line

"""`gs://` paths beyond pre-training, against the local Cloud Storage emulator: fine-tuning's
readers, `flaxlm finetune` / `flaxlm evaluate` with everything in the bucket, `flaxlm fill-mask`
and (slow) `flaxlm prune-vocab` from a bucket workdir, and `flaxlm tokenizer --out`."""

import json
import os

import pytest

from flaxlm import cli, storage
from flaxlm.data import labelled, pairs
from flaxlm.errors import FlaxlmError
from tests.conftest import REPO
from tests.finetune.test_end_to_end import pretrained  # noqa: F401 (a fixture)
from tests.finetune.test_labelled import fixture
from tests.finetune_seq.conftest import TRAIN_TSV
from tests.storage.conftest import BUCKET

NER = os.path.join(REPO, "configs", "ner_es_conll2002.py")


def _upload(local: str, remote: str) -> str:
    with open(local, "rb") as f:
        storage.write_bytes(remote, f.read())
    return remote


def _first_sentences(name: str, count: int) -> str:
    """The first `count` blank-line separated sentences of a fixture: one or two steps."""
    with open(fixture(name), encoding="utf-8") as f:
        return "\n\n".join(f.read().strip().split("\n\n")[:count]) + "\n"


def test_labelled_readers_read_the_bucket(gcs_emulator):
    root = f"gs://{BUCKET}/readers"
    conllu = _upload(fixture("it_isdt-dev-head.conllu"), f"{root}/dev.conllu")
    assert labelled.read_sentences(conllu, "conllu") == labelled.read_sentences(
        fixture("it_isdt-dev-head.conllu"), "conllu")
    tsv = _upload(TRAIN_TSV, f"{root}/train.tsv")
    assert pairs.read_examples(tsv) == pairs.read_examples(TRAIN_TSV)
    with pytest.raises(FlaxlmError, match=f"{root}/none.conllu: labelled data file not found"):
        labelled.read_sentences(f"{root}/none.conllu", "conllu")


# A fine-tuning run compiles its train and eval steps: 218 s under a load average of 10 on the
# 2-core test machine (the other fine-tuning runs in tests/finetune are slow tests too).
@pytest.mark.slow
def test_finetune_with_data_and_workdir_in_the_bucket(
        gcs_emulator,
        pretrained,  # noqa: F811
        tmp_path,
        monkeypatch,
        capsys):
    monkeypatch.chdir(tmp_path)  # nothing may land in a local ./gs:/... directory
    root = f"gs://{BUCKET}/finetune"
    storage.copy_tree(pretrained, f"{root}/pre")
    train, dev = f"{root}/data/train.txt", f"{root}/data/dev.txt"
    storage.write_text(train, _first_sentences("esp-train-head.txt", 8))
    storage.write_text(dev, _first_sentences("esp-testa-head.txt", 4))
    workdir = f"{root}/run"
    assert cli.main([
        "finetune", "--config", NER, "--workdir", workdir, "--no-progress",
        f"--config.init_from={root}/pre", f"--config.data.train_files={train}",
        f"--config.data.eval_files={dev}", f"--config.data.test_files={dev}",
        "--config.finetune.epochs=1", "--config.train.batch_size=8", "--config.data.seq_len=32",
        "--config.train.log_every=1"
    ]) == 0
    assert f"results in {workdir}/results.json" in capsys.readouterr().out
    results = json.loads(storage.read_text(f"{workdir}/results.json"))
    assert results["task"] == "ner_es_conll2002" and results["init_from"] == f"{root}/pre"
    assert [row["step"] for row in results["epochs"]] == [results["steps_per_epoch"]]
    assert {"entity_f1", "accuracy"} <= set(results["test"])
    for name in ("config.json", "metrics.jsonl", "best.json", "tokenizer/flaxlm_tokenizer.json"):
        assert storage.isfile(f"{workdir}/{name}"), name
    assert str(results["steps_per_epoch"]) in storage.listdir(f"{workdir}/checkpoints")

    tables = f"{root}/tables.json"
    assert cli.main(["evaluate", "--workdir", workdir, "--json", tables]) == 0
    assert "| ner_es_conll2002 (test) |" in capsys.readouterr().out
    assert json.loads(storage.read_text(tables))["flare"][0]["task"] == "ner_es_conll2002"
    assert os.listdir(tmp_path) == []


def test_fill_mask_from_a_bucket_workdir(gcs_emulator, pretrained, capsys):  # noqa: F811
    workdir = f"gs://{BUCKET}/fill-mask/run"
    storage.copy_tree(pretrained, workdir)
    assert cli.main(["fill-mask", "--model", workdir, "--top-k", "2",
                     "Roma è la <mask> d'Italia."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Roma è la <mask> d'Italia." and len(lines) == 3
    assert cli.main(["fill-mask", "--model", f"gs://{BUCKET}/fill-mask/none", "x <mask>"]) == 2
    assert "fill-mask/none: not a directory" in capsys.readouterr().err


# 50 s more than fill-mask under a load average of 10 (TensorFlow's start-up for the count).
@pytest.mark.slow
def test_prune_vocab_from_and_into_the_bucket(
        gcs_emulator,
        pretrained,  # noqa: F811
        it_small_corpus,
        capsys):
    workdir = f"gs://{BUCKET}/prune/run"
    storage.copy_tree(pretrained, workdir)
    corpus = _upload(it_small_corpus, f"gs://{BUCKET}/prune/it.txt")
    pruned = f"gs://{BUCKET}/prune/pruned"
    assert cli.main([
        "prune-vocab", "--model", workdir, "--corpus", corpus, "--min-doc-freq", "0.01", "--out",
        pruned
    ]) == 0
    assert f"wrote the pruned model to {pruned}" in capsys.readouterr().out
    report = json.loads(storage.read_text(f"{pruned}/prune_report.json"))
    assert report["model"] == workdir and report["out"] == pruned
    assert storage.isfile(f"{pruned}/tokenizer/flaxlm_tokenizer.json")
    assert cli.main(["prune-vocab", "--model", workdir, "--corpus", corpus, "--out", pruned]) == 2
    assert f"{pruned} already holds a run" in capsys.readouterr().err


def test_tokenizer_out_in_the_bucket(gcs_emulator, it_small_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = f"gs://{BUCKET}/tokenizer/unigram"
    corpus = _upload(it_small_corpus, f"gs://{BUCKET}/tokenizer/it.txt")
    assert cli.main(["tokenizer", "--corpus", corpus, "--vocab-size", "300", "--out", out]) == 0
    assert {"flaxlm_tokenizer.json", "sentencepiece.bpe.model",
            "tokenizer.json"} <= set(storage.listdir(out))
    from flaxlm.data.tokenizers import load_tokenizer
    assert load_tokenizer(out).vocab_size == 300
    assert os.listdir(tmp_path) == []

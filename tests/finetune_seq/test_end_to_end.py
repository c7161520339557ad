"""`flaxlm train` on the same-document pair task from a pre-trained workdir, then export: the
encoder is loaded and the head is fresh, eval metrics are written, the export names its labels.
"""

import dataclasses
import json
import os
import re

import numpy as np
import pytest

from flaxlm import cli
from flaxlm.run.workdir import Workdir
from flaxlm.models.config import preset
from tests.conftest import REPO
from tests.finetune_seq.conftest import DEV_TSV, TRAIN_TSV
from tests.finetune_seq.mlm_workdir import write_mlm_workdir

CONFIG = os.path.join(REPO, "configs", "pairs_es_same_doc.py")


def _mlm_workdir(path, tokenizer):
    """A pre-trained MLM workdir as `flaxlm train` leaves it (params-only checkpoint)."""
    config = dataclasses.replace(preset("tiny"), vocab_size=tokenizer.vocab_size,
                                 pad_token_id=tokenizer.pad_id)
    return write_mlm_workdir(path, tokenizer, config, std=0.1, step=7)


@pytest.mark.slow  # ~40-80 s here: a train step, an eval step and export's parity check compile
def test_train_from_a_pretrained_workdir_then_export(es_unigram, tmp_path, capsys):
    pretrained = str(tmp_path / "pre")
    encoder = {
        k: v
        for k, v in _mlm_workdir(pretrained, es_unigram).items() if k.startswith("encoder/")
    }
    workdir = str(tmp_path / "run")
    assert cli.main([
        "train", "--config", CONFIG, "--workdir", workdir, f"--config.init_from={pretrained}",
        f"--config.data.train_files={TRAIN_TSV}", f"--config.data.eval_files={DEV_TSV}",
        f"--config.data.test_files={DEV_TSV}", "--config.data.seq_len=32",
        "--config.train.batch_size=32", "--config.finetune.epochs=2"
    ]) == 0
    out = capsys.readouterr().out
    loaded = re.search(r"weights: (\d+) tensors from init_from \([^)]*step 7\); fresh: ([^;\n]+)",
                       out)
    assert loaded, out
    assert int(loaded.group(1)) == len(encoder)
    assert loaded.group(2) == "classifier/dense/* (2), classifier/out/* (2)"
    assert "2 labels (different, same); 160 training text pairs" in out
    # Two epochs of 160 / 32 steps, evaluated after each one.
    evals = [m for m in Workdir(workdir).read_metrics() if "eval_accuracy" in m]
    assert [m["step"] for m in evals] == [5, 10]
    assert all(0 <= m["eval_accuracy"] <= 1 and m["eval_examples"] == 48 for m in evals)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["labels"] == ["different", "same"]
    best = json.load(open(os.path.join(workdir, "best.json"), encoding="utf-8"))
    assert best["metric"] == "accuracy" and best["value"] == max(m["eval_accuracy"] for m in evals)
    # The test set (here the dev file again) is scored once, on the best epoch's weights.
    results = json.load(open(os.path.join(workdir, "results.json"), encoding="utf-8"))
    assert results["test_step"] == best["step"]
    assert results["test"]["accuracy"] == best["value"]
    assert {"macro_precision", "macro_recall", "macro_f1"} <= set(results["test"])
    assert [r["step"] for r in results["epochs"]] == [5, 10]

    assert cli.main(["export", "--workdir", workdir, "--out", str(tmp_path / "export")]) == 0
    with open(tmp_path / "export" / "config.json", encoding="utf-8") as f:
        hf = json.load(f)
    assert hf["architectures"] == ["XLMRobertaForSequenceClassification"]
    assert hf["id2label"] == {"0": "different", "1": "same"}


def _bert_mlm_workdir(path, tokenizer):
    """A BERT-architecture MLM workdir without a pooler, as multilingual-e5-small imports."""
    config = dataclasses.replace(preset("tiny"), arch="bert", type_vocab_size=2, pooler=False,
                                 layer_norm_eps=1e-12, vocab_size=tokenizer.vocab_size,
                                 pad_token_id=tokenizer.pad_id)
    return write_mlm_workdir(path, tokenizer, config, std=0.1, step=3)


def _pair_args(workdir, pretrained):
    return [
        "--config", CONFIG, "--workdir", workdir, f"--config.init_from={pretrained}",
        f"--config.data.train_files={TRAIN_TSV}", f"--config.data.eval_files={DEV_TSV}",
        "--config.data.test_files=", "--config.data.seq_len=32", "--config.train.batch_size=32"
    ]


def test_a_bert_encoder_without_a_pooler_gets_a_fresh_one(es_wordpiece, tmp_path):
    """BERT classifies the pooled output: from a release saved without a pooler, the run's model
    has one, outside what init_from loads (a BERT workdir's pooler could not be switched on by
    hand: init_from fixes the model's fields)."""
    from flaxlm import experiment, run_config
    from flaxlm.models.param_tree import flat_names
    from flaxlm.run.weights import plan

    pretrained = str(tmp_path / "pre")
    source = _bert_mlm_workdir(pretrained, es_wordpiece)
    workdir = str(tmp_path / "run")
    args = _pair_args(workdir, pretrained)
    config = run_config.load(CONFIG, args[4:])
    exp = experiment.build(config, Workdir(workdir))
    assert exp.model_config.pooler and exp.model_config.arch == "bert"
    targets = {n: a.shape for n, a in flat_names(exp.abstract_state["params"]).items()}
    init = plan(exp.objective.init_rules(True), targets,
                {"init_from": {
                    n: np.shape(v)
                    for n, v in source.items()
                }})
    assert sorted(init.fresh) == [
        "classifier/classifier/bias", "classifier/classifier/kernel", "encoder/pooler/dense/bias",
        "encoder/pooler/dense/kernel"
    ]
    assert set(init.loaded) == {n for n in source if n.startswith("encoder/")}


@pytest.mark.slow  # ~40-80 s: a train step, an eval step and export's parity check compile
def test_a_bert_encoder_without_a_pooler_trains_and_exports(es_wordpiece, tmp_path, capsys):
    import transformers

    pretrained = str(tmp_path / "pre")
    _bert_mlm_workdir(pretrained, es_wordpiece)
    workdir = str(tmp_path / "run")
    assert cli.main(["train", *_pair_args(workdir, pretrained), "--config.finetune.epochs=1"]) == 0
    fresh = re.search(r"; fresh: ([^;\n]+)", capsys.readouterr().out).group(1)
    assert sorted(fresh.split(", ")) == ["classifier/classifier/* (2)", "encoder/pooler/* (2)"]
    assert cli.main(["export", "--workdir", workdir, "--out", str(tmp_path / "export")]) == 0
    model, info = transformers.BertForSequenceClassification.from_pretrained(
        str(tmp_path / "export"), output_loading_info=True)
    assert not info["missing_keys"] and model.bert.pooler is not None

"""`flaxlm train --config configs/pos_it_isdt.py` from a small pre-trained workdir: encoder loaded,
classifier fresh, one evaluation per epoch, the best epoch in best.json, the label set in
config.json; its export runs in transformers' token-classification pipeline."""

import json
import os

import pytest

from flaxlm import cli
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.run.workdir import Workdir
from flaxlm.models.config import ModelConfig
from tests.conftest import REPO
from tests.convert.conftest import write_workdir
from tests.finetune.test_labelled import fixture

POS_CONFIG = os.path.join(REPO, "configs", "pos_it_isdt.py")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tiny_tokenizer_dir):
    """A workdir as MLM pre-training leaves it: a small XLM-R-shaped encoder + its tokenizer."""
    tok = load_tokenizer(tiny_tokenizer_dir)
    config = ModelConfig(arch="xlmr", vocab_size=tok.vocab_size, hidden_size=32, num_layers=2,
                         num_heads=4, intermediate_size=64, max_position_embeddings=66,
                         type_vocab_size=1, pad_token_id=tok.pad_id, layer_norm_eps=1e-5)
    path = tmp_path_factory.mktemp("pre") / "run"
    write_workdir(path, tiny_tokenizer_dir, config, steps=(10, ))
    return str(path)


def finetune_args(workdir, pretrained, *extra):
    return [
        "train", "--config", POS_CONFIG, "--workdir",
        str(workdir), "--no-progress", f"--config.init_from={pretrained}",
        f"--config.data.train_files={fixture('it_isdt-dev-head.conllu')}",
        f"--config.data.eval_files={fixture('it_isdt-test-head.conllu')}",
        "--config.finetune.epochs=3", "--config.train.batch_size=8", "--config.data.seq_len=32",
        "--config.train.learning_rate=3e-3", "--config.train.schedule=constant", *extra
    ]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, pretrained):
    import contextlib
    import io
    workdir = tmp_path_factory.mktemp("pos") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(finetune_args(workdir, pretrained)) == 0
    return workdir, out.getvalue()


@pytest.mark.slow  # one fine-tuning run: ~75 s on the shared CPU (compiles train + eval steps)
def test_finetune_loads_encoder_and_evaluates_each_epoch(finetuned):
    workdir, printed = finetuned
    print(printed)
    assert "weights: " in printed and "tensors from init_from" in printed
    assert "fresh: classifier/bias, classifier/kernel" in printed
    assert "3 epochs × " in printed and "split into overlapping windows" in printed
    run = json.loads((workdir / "config.json").read_text())
    assert run["head"] == "token_classification" and "NOUN" in run["labels"]
    assert run["model"]["num_labels"] == len(run["labels"])
    rows = Workdir(str(workdir)).read_metrics()
    evals = [r for r in rows if "eval_macro_f1" in r]
    per_epoch = evals[0]["step"]
    assert [r["step"] for r in evals] == [per_epoch, 2 * per_epoch, 3 * per_epoch]
    assert {"eval_accuracy", "eval_macro_precision", "eval_macro_recall",
            "eval_loss"} <= set(evals[0])
    best = json.loads((workdir / "best.json").read_text())
    assert best["metric"] == "macro_f1" and best["value"] == max(r["eval_macro_f1"] for r in evals)


def test_resume_with_another_label_set_is_refused(pretrained, tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"labels": ["ADJ", "NOUN"]}))
    assert cli.main(finetune_args(workdir, pretrained)) == 2
    err = capsys.readouterr().err
    assert "config.json: labels = [" in err and "use the original data or a new --workdir" in err


@pytest.mark.slow  # uses the fine-tuning run above
def test_export_runs_in_the_token_classification_pipeline(finetuned, tmp_path, capsys):
    workdir, _ = finetuned
    best = json.loads((workdir / "best.json").read_text())
    bundle = tmp_path / "bundle"
    capsys.readouterr()
    # Without --step, export takes the best epoch's checkpoint, not the latest.
    assert cli.main(["export", "--workdir", str(workdir), "--out", str(bundle)]) == 0
    assert f"exported step {best['step']} " in capsys.readouterr().out
    hf_config = json.loads((bundle / "config.json").read_text())
    labels = json.loads((workdir / "config.json").read_text())["labels"]
    assert hf_config["architectures"] == ["XLMRobertaForTokenClassification"]
    assert [hf_config["id2label"][str(i)] for i in range(len(labels))] == labels
    from transformers import pipeline
    tagger = pipeline("token-classification", model=str(bundle), aggregation_strategy="simple")
    entities = tagger("Alcune chiamate partirono dal Quirinale.")
    assert entities and {e["entity_group"] for e in entities} <= set(labels)

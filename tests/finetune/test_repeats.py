"""`flaxlm finetune` (k-fold and seed repeats, resume, test evaluation of the best epoch,
results.json) and `flaxlm evaluate` (the cards' tables)."""

import json
import os
import statistics

import pytest

from flaxlm import cli, run_config
from flaxlm.errors import FlaxlmError
from flaxlm.objectives import finetune_config
from flaxlm.optim import learning_rate_schedule
from flaxlm.run import results as run_results
from flaxlm.tasks.repeats import run_plan
from tests.conftest import REPO
from tests.convert.conftest import tokenizers  # noqa: F401 (a fixture)
from tests.finetune.test_end_to_end import pretrained  # noqa: F401 (a fixture)
from tests.finetune.test_labelled import fixture

WIKINER = os.path.join(REPO, "configs", "ner_it_wikiner.py")
POS = os.path.join(REPO, "configs", "pos_it_isdt.py")


def test_folds_are_contiguous_slices_that_partition_the_data():
    items = list(range(11))
    parts = [finetune_config.split(items, 3, i) for i in range(3)]
    assert [dev for _, dev in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert all(sorted(train + dev) == items for train, dev in parts)
    assert finetune_config.split(items, 0, -1) == (items, [])
    with pytest.raises(FlaxlmError, match="finetune.folds=3 needs at least 3 training examples"):
        finetune_config.split(items[:2], 3, 0)
    assert [name for name, _ in run_plan(2, 1, 0)] == ["fold-0", "fold-1"]
    assert run_plan(0, 3, 42) == [(f"seed-{s}", [f"--config.seed={s}"]) for s in (42, 43, 44)]
    assert [name for name, _ in run_plan(2, 2, 0)
            ] == ["fold-0-seed-0", "fold-0-seed-1", "fold-1-seed-0", "fold-1-seed-1"]
    assert run_plan(0, 1, 0) == []


def test_config_keys_schedule_and_single_run_checks(capsys):
    with pytest.raises(
            FlaxlmError, match="token_classification.layer_decay moved: use "
            "--config.finetune.layer_decay"):
        run_config.load(POS, ["--config.objective.token_classification.layer_decay=0.8"])
    with pytest.raises(FlaxlmError, match="finetune.epochs=2 does not apply to objective 'mlm'"):
        run_config.load(os.path.join(REPO, "configs", "tiny.py"), ["--config.finetune.epochs=2"])
    with pytest.raises(FlaxlmError, match="leave data.eval_files empty"):
        run_config.load(WIKINER, ["--config.data.eval_files=x.txt"])
    constant = run_config.load(POS, ["--config.train.warmup_steps=2"]).optim
    assert [float(learning_rate_schedule(constant)(s)) for s in (1, 2, 50, 10_000)] == \
        pytest.approx([5e-6, 1e-5, 1e-5, 1e-5])
    linear = run_config.load(POS, ["--config.train.schedule=linear"]).optim
    assert float(learning_rate_schedule(linear)(linear.total_steps // 2)) == pytest.approx(5e-6)
    with pytest.raises(FlaxlmError, match="schedule=constant stays at train.learning_rate"):
        run_config.load(POS, ["--config.train.end_learning_rate=1e-6"])
    assert cli.main(["train", "--config", WIKINER, "--workdir", "unused"]) == 2
    assert "use `flaxlm finetune`" in capsys.readouterr().err


def test_train_loss_weights_each_line_by_the_steps_of_its_window(tmp_path):
    # Steps 1-3 in one line (a log_every=3 window), step 4 alone (the run's last step).
    rows = [{
        "step": 3,
        "loss": 2.0,
        "log_window_steps": 3
    }, {
        "step": 4,
        "loss": 4.0,
        "log_window_steps": 1
    }, {
        "step": 4,
        "eval_loss": 1.0,
        "eval_macro_f1": 0.5
    }]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    epochs = run_results.epoch_rows(str(tmp_path), "macro_f1", steps_per_epoch=4)
    assert epochs[0]["train_loss"] == 2.5  # (3 × 2.0 + 4.0) / 4 steps


def test_results_rows_and_aggregate(tmp_path):
    rows = [{
        "step": 1,
        "loss": 3.0
    }, {
        "step": 2,
        "loss": 1.0
    }, {
        "step": 2,
        "eval_loss": 2.5,
        "eval_macro_f1": 0.25,
        "eval_accuracy": 0.5
    }, {
        "step": 3,
        "loss": 0.5
    }, {
        "step": 4,
        "eval_loss": 2.0,
        "eval_macro_f1": 0.5,
        "eval_accuracy": 0.75
    }]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    epochs = run_results.epoch_rows(str(tmp_path), "macro_f1", steps_per_epoch=2)
    assert epochs == [{
        "epoch": 1.0,
        "step": 2,
        "train_loss": 2.0,
        "dev_loss": 2.5,
        "dev": {
            "macro_f1": 0.25,
            "accuracy": 0.5
        }
    }, {
        "epoch": 2.0,
        "step": 4,
        "train_loss": 0.5,
        "dev_loss": 2.0,
        "dev": {
            "macro_f1": 0.5,
            "accuracy": 0.75
        }
    }]
    f1s = [0.5, 0.625, 0.875]
    runs = {
        f"seed-{i}": {
            "objective": "token_classification",
            "params": 10,
            "selection": {},
            "best": {
                "dev": {
                    "macro_f1": f,
                    "examples": 9
                }
            },
            "test": {
                "macro_f1": f / 2
            }
        }
        for i, f in enumerate(f1s)
    }
    summary = run_results.aggregate(runs, task="pos")
    assert summary["runs"] == runs and summary["task"] == "pos"
    assert summary["best_dev"] == {
        "macro_f1": {
            "mean": statistics.mean(f1s),
            "std": pytest.approx(statistics.stdev(f1s)),
            "n": 3
        }
    }
    assert summary["test"]["macro_f1"]["std"] == pytest.approx(statistics.stdev(f1s) / 2)
    assert run_results.summary([0.5])["std"] is None


def test_evaluate_prints_the_cards_tables_and_writes_json(tmp_path, capsys):
    epochs = [{
        "epoch": 1.0,
        "step": 9,
        "train_loss": 0.75,
        "dev_loss": 0.5,
        "dev": {
            "entity_f1": 0.625,
            "macro_precision": 0.5,
            "macro_recall": 0.5,
            "macro_f1": 0.5
        }
    }, {
        "epoch": 2.0,
        "step": 18,
        "train_loss": 0.25,
        "dev_loss": 0.375,
        "dev": {
            "entity_f1": 0.875,
            "macro_precision": 0.625,
            "macro_recall": 0.875,
            "macro_f1": 0.75
        }
    }]
    panx = {
        "task": "panx_it",
        "objective": "token_classification",
        "params": 277_000_000,
        "init_from": "hf/xlm-roberta-base",
        "epochs": epochs,
        "best": {
            "epoch": 2.0,
            "step": 18,
            "dev": epochs[1]["dev"]
        }
    }
    accuracy = [0.875, 0.9375]
    seeds = {
        f"seed-{i}": {
            "objective": "sequence_classification",
            "params": 22_000_000,
            "selection": {},
            "test": {
                "accuracy": a
            }
        }
        for i, a in enumerate(accuracy)
    }
    pawsx = run_results.aggregate(seeds, task="pawsx_es")
    pawsx["init_from"] = "runs/selectra_small"
    for name, results in (("panx", panx), ("pawsx", pawsx)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    out = tmp_path / "tables.json"
    assert cli.main([
        "evaluate", "--workdir",
        str(tmp_path / "panx"),
        str(tmp_path / "pawsx"), "--json",
        str(out)
    ]) == 0
    printed = capsys.readouterr().out
    # PAN-X had no test files: its best epoch's dev scores, marked as such.
    assert "| Task | Recall | Precision | F1 |\n|---|---|---|---|\n" \
        "| panx_it (dev) | 0.8750 | 0.6250 | 0.7500 |\n\n" in printed
    assert "| Model | panx_it (f1) | PAWS-X (acc) | Params |" in printed
    assert "| xlm-roberta-base | 0.8750 (dev) | – | 277.0M |" in printed
    mean, std = statistics.mean(accuracy), statistics.stdev(accuracy)
    assert f"| selectra_small | – | {mean:.4f} ± {std:.4f} | 22.0M |" in printed
    assert "| Training Loss | Epoch | Step | Validation Loss | F1 |" in printed
    assert "| 0.2500 | 2.0 | 18 | 0.3750 | 0.8750 |" in printed
    tables = json.loads(out.read_text())
    assert [r["f1"] for r in tables["epochs"]["panx_it"]] == [0.625, 0.875]
    assert cli.main(["evaluate", "--workdir", str(tmp_path)]) == 2
    assert "no results.json (run `flaxlm finetune` to the end" in capsys.readouterr().err


def test_bad_test_file_stops_the_run_before_it_compiles(
        pretrained,
        tmp_path,  # noqa: F811
        capsys):
    empty = tmp_path / "empty.conllu"
    empty.write_text("\n", encoding="utf-8")
    workdir = tmp_path / "pos"
    assert cli.main([
        "finetune", "--config", POS, "--workdir",
        str(workdir), "--no-progress", f"--config.init_from={pretrained}",
        f"--config.data.train_files={fixture('it_isdt-dev-head.conllu')}",
        f"--config.data.eval_files={fixture('it_isdt-dev-head.conllu')}",
        f"--config.data.test_files={empty}", "--config.train.batch_size=8",
        "--config.data.seq_len=32"
    ]) == 2
    assert "empty.conllu: no sentences in this file" in capsys.readouterr().err
    assert not (workdir / "checkpoints").exists()


def _test_file_with_a_novel_label(path):
    """ISDT's first test sentences; the first word's UPOS becomes a label no train file has."""
    lines = open(fixture("it_isdt-test-head.conllu"), encoding="utf-8").read().splitlines()
    first = next(i for i, line in enumerate(lines) if line.split("\t")[0] == "1")
    columns = lines[first].split("\t")
    lines[first] = "\t".join([*columns[:3], "NOVEL", *columns[4:]])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.slow  # two fine-tuning runs (~2-3 min on the shared CPU)
def test_two_folds_test_evaluation_resume_and_tables(pretrained, tmp_path, capsys):  # noqa: F811
    workdir = tmp_path / "ner"
    args = [
        "finetune", "--config", WIKINER, "--workdir",
        str(workdir), "--no-progress", f"--config.init_from={pretrained}",
        "--config.objective.token_classification.format="
        "conllu", f"--config.data.train_files={fixture('it_isdt-dev-head.conllu')}",
        f"--config.data.test_files={_test_file_with_a_novel_label(tmp_path / 'test.conllu')}",
        "--config.finetune.folds=2", "--config.finetune.epochs=2", "--config.train.batch_size=8",
        "--config.data.seq_len=32", "--config.train.learning_rate=3e-3"
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "run 1/2 fold-0" in out and "run 2/2 fold-1" in out
    assert out.count("labels not in the training data (scored as errors): NOVEL (1 words)") == 2
    folds = [json.loads((workdir / f"fold-{i}" / "results.json").read_text()) for i in (0, 1)]
    for fold in folds:
        assert fold["task"] == "ner_it_wikiner" and len(fold["epochs"]) == 2
        assert [r["epoch"] for r in fold["epochs"]] == [1.0, 2.0]
        best = max(fold["epochs"], key=lambda r: r["dev"]["macro_f1"])
        assert fold["best"]["step"] == best["step"] == fold["test_step"]
        assert set(fold["test"]) >= {"accuracy", "macro_precision", "macro_recall", "macro_f1"}
        assert fold["test"]["accuracy"] < 1.0
    summary = json.loads((workdir / "results.json").read_text())
    assert set(summary["runs"]) == {"fold-0", "fold-1"}
    f1 = [fold["test"]["macro_f1"] for fold in folds]
    assert summary["test"]["macro_f1"]["mean"] == pytest.approx(statistics.mean(f1))
    assert summary["test"]["macro_f1"]["std"] == pytest.approx(statistics.stdev(f1))

    # An interrupted fold (no results.json yet) resumes from its checkpoint; finished ones are
    # skipped. Resumed at its last step, fold-1 only re-evaluates the same best checkpoint.
    (workdir / "fold-1" / "results.json").unlink()
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "run 1/2 fold-0: finished before, skipped" in out
    assert "resumed from checkpoint" in out and "run 2/2 fold-1\n" in out
    again = json.loads((workdir / "fold-1" / "results.json").read_text())
    assert again["test"] == folds[1]["test"] and again["epochs"] == folds[1]["epochs"]

    tables = tmp_path / "tables.json"
    assert cli.main(["evaluate", "--workdir", str(workdir), "--json", str(tables)]) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert "| Task | Recall | Precision | F1 |" in printed
    assert f"| ner_it_wikiner (test) | {summary['test']['macro_recall']['mean']:.4f} ± " in printed
    assert json.loads(tables.read_text())["flare"][0]["f1"]["mean"] == pytest.approx(
        summary["test"]["macro_f1"]["mean"])


@pytest.mark.slow  # an import with its parity check and one short fine-tuning run (~1-2 min)
def test_finetune_starts_from_a_hugging_face_directory(
        tokenizers,
        tmp_path,  # noqa: F811
        capsys):
    from tests.convert.conftest import make_hf_dir
    from tests.finetune_seq.conftest import DEV_TSV, TRAIN_TSV
    hf_dir = tmp_path / "hf"
    make_hf_dir(hf_dir, "bert", tokenizers["wp_cased"], hidden=32, heads=4, intermediate=64,
                type_vocab=2, with_head=False)
    workdir = tmp_path / "pairs"
    args = [
        "finetune", "--config",
        os.path.join(REPO, "configs", "pairs_es_same_doc.py"), "--workdir",
        str(workdir), "--no-progress", f"--config.init_from={hf_dir}",
        f"--config.data.train_files={TRAIN_TSV}", f"--config.data.eval_files={DEV_TSV}",
        f"--config.data.test_files={DEV_TSV}", "--config.data.seq_len=32",
        "--config.finetune.epochs=1"
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"is a Hugging Face directory: imported into {workdir / 'init'}" in out
    assert f"tensors from init_from ({workdir / 'init'}, step 0); fresh: classifier/" in out
    results = json.loads((workdir / "results.json").read_text())
    assert results["task"] == "pairs_es_same_doc" and results["init_from"] == str(workdir / "init")
    assert results["test"]["accuracy"] == results["best"]["dev"]["accuracy"]

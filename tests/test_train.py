"""End to end through `flaxlm train`: outputs, resume continuity, and bad input."""

import json
import os

import numpy as np
import pytest

from flaxlm import cli
from flaxlm.run.workdir import Workdir
from tests.conftest import IT_EVAL, IT_TRAIN, REPO

TINY = os.path.join(REPO, "configs", "tiny.py")


def _train(workdir, tokenizer, *extra, capsys=None):
    argv = [
        "train", "--config", TINY, "--workdir",
        str(workdir), "--no-progress", f"--config.data.tokenizer={tokenizer}",
        f"--config.data.train_files={IT_TRAIN}", f"--config.data.eval_files={IT_EVAL}",
        "--config.train.log_every=1", "--config.data.seq_len=32", *extra
    ]
    return cli.main(argv)


def _losses(workdir):
    return {m["step"]: m["loss"] for m in Workdir(workdir).read_metrics() if "loss" in m}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_tokenizer_dir):
    """12 uninterrupted steps, checkpoints every 6."""
    workdir = tmp_path_factory.mktemp("reference")
    assert _train(workdir, tiny_tokenizer_dir, "--config.train.steps=12",
                  "--config.train.checkpoint_every=6") == 0
    return workdir


def test_run_writes_metrics_checkpoints_config_and_tensorboard(reference_run):
    metrics = Workdir(reference_run).read_metrics()
    train_lines = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in train_lines] == list(range(1, 13))
    for key in ("accuracy", "learning_rate", "grad_norm", "tokens_per_sec", "mfu"):
        assert key in train_lines[-1], key
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]
    evals = [m for m in metrics if "eval_loss" in m]
    assert evals and evals[-1]["step"] == 12 and 0 <= evals[-1]["eval_accuracy"] <= 1
    assert sorted(os.listdir(reference_run / "checkpoints")) == ["12", "6"]
    saved = json.loads((reference_run / "config.json").read_text())
    assert saved["model"]["num_layers"] == 2 and saved["config"]["train"]["steps"] == 12
    assert os.path.exists(reference_run / "tokenizer" / "flaxlm_tokenizer.json")
    assert any(
        f.startswith("events.out.tfevents") for f in os.listdir(reference_run / "tensorboard"))


def test_stopped_and_resumed_run_logs_the_same_losses(reference_run, tmp_path, tiny_tokenizer_dir):
    # A run planned for 12 steps (decay_steps) that stops at 6, as a preempted run would.
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.steps=6",
                  "--config.train.decay_steps=12", "--config.train.checkpoint_every=6") == 0
    # Same command with more steps: resumes from step 6 and continues the same data stream.
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.steps=12",
                  "--config.train.checkpoint_every=6") == 0
    resumed, reference = _losses(tmp_path), _losses(reference_run)
    assert sorted(resumed) == list(range(1, 13))
    np.testing.assert_array_equal([resumed[s] for s in range(1, 13)],
                                  [reference[s] for s in range(1, 13)])


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flaxlm: error:"), err
    return err[0]


def test_unknown_config_key(tmp_path, tiny_tokenizer_dir, capsys):
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.stepz=3") == 2
    assert "unknown config key 'train.stepz'; did you mean 'train.steps'" in _error_line(capsys)


def test_wrong_typed_override(tmp_path, tiny_tokenizer_dir, capsys):
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.steps=many") == 2
    assert "--config.train.steps=many: expected a value of type int" in _error_line(capsys)


def test_missing_corpus(tmp_path, tiny_tokenizer_dir, capsys):
    assert _train(tmp_path / "run", tiny_tokenizer_dir,
                  f"--config.data.train_files={tmp_path / 'nope.txt'}") == 2
    assert "nope.txt" in _error_line(capsys)


def test_empty_corpus(tmp_path, tiny_tokenizer_dir, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    assert _train(tmp_path / "run", tiny_tokenizer_dir, f"--config.data.train_files={empty}") == 2
    assert "empty.txt" in _error_line(capsys)


def test_batch_the_mesh_cannot_divide(tmp_path, tiny_tokenizer_dir, capsys):
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.batch_size=12") == 2
    assert "train.batch_size=12 must be divisible by data-parallel size 8" in _error_line(capsys)


def test_bad_bytes_warn_and_train(tmp_path, tiny_tokenizer_dir, capsys):
    dirty = tmp_path / "dirty.txt"
    with open(IT_TRAIN, "rb") as f:
        clean = f.read(60_000)
    dirty.write_bytes(b"ok line\n\xff\xfe broken \x00 nul\n" + clean)
    with pytest.warns(UserWarning, match=r"dirty.txt: 1 line\(s\) had invalid UTF-8 or NUL"):
        assert _train(tmp_path / "run", tiny_tokenizer_dir, f"--config.data.train_files={dirty}",
                      "--config.train.steps=2") == 0


def test_errors_never_touch_existing_checkpoints(reference_run, tiny_tokenizer_dir, capsys):
    before = {
        p: os.path.getmtime(os.path.join(dp, p))
        for dp, _, fs in os.walk(reference_run / "checkpoints")
        for p in fs
    }
    assert _train(reference_run, tiny_tokenizer_dir, "--config.train.steps=14",
                  "--config.model.num_layers=3") == 2
    line = _error_line(capsys)
    assert "model.num_layers: saved 2 vs requested 3" in line
    assert _train(reference_run, tiny_tokenizer_dir, "--config.train.batch_size=12") == 2
    capsys.readouterr()
    after = {
        p: os.path.getmtime(os.path.join(dp, p))
        for dp, _, fs in os.walk(reference_run / "checkpoints")
        for p in fs
    }
    assert before == after


def test_unwritable_workdir_fails_before_compiling(tmp_path, tiny_tokenizer_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert _train(blocker / "run", tiny_tokenizer_dir) == 2
    assert "is not writable" in _error_line(capsys)


def test_full_disk_is_refused_before_training(tmp_path, tiny_tokenizer_dir, capsys, monkeypatch):
    import collections
    import shutil
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10 ** 6, 10 ** 6 - 1000, 1000))
    assert _train(tmp_path, tiny_tokenizer_dir) == 2
    assert "MiB free but 3 kept checkpoints" in _error_line(capsys)
    assert not os.path.exists(tmp_path / "checkpoints")


def test_a_line_logs_its_window_s_mean_and_a_resumed_run_the_same_lines(
        reference_run, tmp_path, tiny_tokenizer_dir):
    """With log_every=4 and eval_every=5 a line is the mean of its window's steps (the reference
    logs each step), an evaluation closes a window, and a run stopped at step 6, inside a window,
    then extended, logs what one run would."""
    every_step = {m["step"]: m for m in Workdir(reference_run).read_metrics() if "loss" in m}
    grid = ("--config.train.checkpoint_every=6", "--config.train.log_every=4",
            "--config.train.eval_every=5")
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.steps=6",
                  "--config.train.decay_steps=12", *grid) == 0
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.steps=12", *grid) == 0
    lines = {m["step"]: m for m in Workdir(tmp_path).read_metrics() if "loss" in m}
    assert sorted(lines) == [4, 5, 6, 8, 10, 12]
    for step, first in ((4, 1), (5, 5), (6, 6), (8, 6), (10, 9), (12, 11)):
        window = range(first, step + 1)
        assert lines[step]["log_window_steps"] == len(window)
        for key in ("loss", "accuracy", "grad_norm"):
            mean = np.mean([every_step[s][key] for s in window])
            np.testing.assert_allclose(lines[step][key], mean, rtol=1e-12, err_msg=key)
        assert lines[step]["learning_rate"] == every_step[step]["learning_rate"]
    assert len({lines[8]["loss"], every_step[8]["loss"], every_step[7]["loss"]}) == 3
    assert [m["step"] for m in Workdir(tmp_path).read_metrics()
            if "eval_loss" in m] == [5, 6, 10, 12]

"""Damaged checkpoints: reported in one line, set aside (never deleted), the newest intact one used;
a changed optimizer structure is refused by name and nothing is moved."""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from flaxlm import cli
from flaxlm.run.checkpoint import read_params, write_params
from flaxlm.errors import FlaxlmError
from flaxlm.run.workdir import Workdir
from tests.conftest import IT_TRAIN, REPO

TINY = os.path.join(REPO, "configs", "tiny.py")


def _train(workdir, tokenizer, *extra):
    return cli.main([
        "train", "--config", TINY, "--workdir",
        str(workdir), "--no-progress", f"--config.data.tokenizer={tokenizer}",
        f"--config.data.train_files={IT_TRAIN}", "--config.data.eval_files=",
        "--config.train.log_every=1", "--config.data.seq_len=32",
        "--config.train.checkpoint_every=10", *extra
    ])


def _flip_array_data(step_dir):
    """Flips bytes in every array data file (OCDBT `d/` files), as a bad disk or copy would."""
    files = glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True)
    assert files, step_dir
    for path in files:
        data = bytearray(open(path, "rb").read())
        for i in range(len(data) // 3, len(data), max(1, len(data) // 50)):
            data[i] ^= 0xFF
        open(path, "wb").write(bytes(data))


def _truncate_array_data(step_dir):
    for path in glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True):
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])


def _garble(relative):
    def damage(step_dir):
        with open(os.path.join(step_dir, relative), "wb") as f:
            f.write(b"\0{not json")

    return damage


def _remove(relative):
    return lambda step_dir: os.remove(os.path.join(step_dir, relative))


def _losses(workdir):
    return {m["step"]: m["loss"] for m in Workdir(workdir).read_metrics() if "loss" in m}


@pytest.fixture(scope="module")
def run20(tmp_path_factory, tiny_tokenizer_dir):
    """20 steps, checkpoints at 10 and 20 (copied by each test before damaging it)."""
    workdir = tmp_path_factory.mktemp("run20")
    assert _train(workdir, tiny_tokenizer_dir, "--config.train.steps=20") == 0
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]
    return workdir


@pytest.fixture
def copy_of_run20(run20, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(run20, workdir)
    return workdir


def test_resume_sets_a_damaged_checkpoint_aside_and_continues_from_the_older_one(
        run20, copy_of_run20, tiny_tokenizer_dir, capsys):
    _flip_array_data(copy_of_run20 / "checkpoints" / "20")
    capsys.readouterr()
    assert _train(copy_of_run20, tiny_tokenizer_dir, "--config.train.steps=30") == 0
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [err.strip()], err  # one line, no traceback or orbax log
    assert err.startswith("flaxlm: checkpoint 20 is unreadable (checkpoints/20/")
    assert "moved to checkpoints/20.unreadable, trying 10" in err
    assert "resumed from checkpoint 10" in out
    aside = copy_of_run20 / "checkpoints" / "20.unreadable"
    assert glob.glob(str(aside / "**" / "d" / "*"), recursive=True)  # kept, files and all
    assert sorted(os.listdir(copy_of_run20 / "checkpoints")) == ["10", "20", "20.unreadable", "30"]
    # Step 11's loss is computed on the restored parameters: bitwise those of step 10. (Later
    # steps differ from the original run: train.steps=30 stretches the learning-rate decay.)
    resumed, original = _losses(copy_of_run20), _losses(run20)
    assert sorted(resumed) == list(range(1, 31))
    assert resumed[11] == original[11] and resumed[21] != original[20]


def test_no_intact_checkpoint_is_an_error_naming_each_and_nothing_starts_over(
        copy_of_run20, tiny_tokenizer_dir, capsys):
    for step in ("10", "20"):
        _flip_array_data(copy_of_run20 / "checkpoints" / step)
    capsys.readouterr()
    assert _train(copy_of_run20, tiny_tokenizer_dir, "--config.train.steps=30") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert "checkpoint 20 is unreadable" in err[0] and "trying 10" in err[0]
    assert err[1].startswith("flaxlm: error:") and "no intact checkpoint: 20 (" in err[1]
    assert "; 10 (checkpoints/10/" in err[1] and "20.unreadable, 10.unreadable" in err[1]
    checkpoints = copy_of_run20 / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["10.unreadable", "20.unreadable"]
    # A rerun must not silently train from scratch past the set-aside checkpoints.
    assert _train(copy_of_run20, tiny_tokenizer_dir, "--config.train.steps=30") == 2
    err = capsys.readouterr().err
    assert "holds only checkpoints set aside as unreadable (10.unreadable, 20.unreadable)" in err
    assert sorted(os.listdir(checkpoints)) == ["10.unreadable", "20.unreadable"]


def test_changed_optimizer_structure_names_the_setting_and_moves_nothing(
        copy_of_run20, tiny_tokenizer_dir, capsys):
    capsys.readouterr()
    # tiny clips gradients (max_grad_norm 1.0); without clipping the optax chain loses a state.
    assert _train(copy_of_run20, tiny_tokenizer_dir, "--config.train.steps=30",
                  "--config.train.max_grad_norm=0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flaxlm: error: checkpoint 20 "), err
    assert "opt_state.1.0.count is in the checkpoint" in err[0]
    assert "train.max_grad_norm" in err[0] and "had train.max_grad_norm=1.0" in err[0]
    assert "unreadable" not in err[0]
    assert sorted(os.listdir(copy_of_run20 / "checkpoints")) == ["10", "20"]


def test_an_imported_workdir_as_training_workdir_is_refused_not_set_aside(
        tmp_path, tiny_tokenizer_dir, capsys):
    write_params(str(tmp_path), 0, {"w": np.zeros(2, np.float32)}, {
        "step": 0,
        "source": "hf-import"
    })
    capsys.readouterr()
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.steps=30") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--config.init_from={tmp_path}" in err[0], err
    assert os.listdir(tmp_path / "checkpoints") == ["0"]


@pytest.mark.parametrize("damage, blamed", [
    (_flip_array_data, "checkpoints/20/params"),
    (_truncate_array_data, "checkpoints/20/params"),
    (_garble("params/_METADATA"), "checkpoints/20/params/_METADATA"),
    (_garble("meta/metadata"), "checkpoints/20/meta/metadata"),
    (_remove("meta/metadata"), "checkpoints/20/meta/metadata"),
])
def test_read_params_skips_an_unreadable_checkpoint_without_touching_the_workdir(
        copy_of_run20, damage, blamed, capsys):
    damage(str(copy_of_run20 / "checkpoints" / "20"))
    capsys.readouterr()
    params, meta, step = read_params(str(copy_of_run20))
    assert step == 10 and meta["step"] == 10 and params["encoder"]
    err = capsys.readouterr().err
    assert err.startswith(f"flaxlm: checkpoint 20 is unreadable ({blamed}"), err
    assert err.rstrip().endswith("trying 10") and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(copy_of_run20 / "checkpoints")) == ["10", "20"]


def test_read_params_of_an_unreadable_requested_step_is_an_error(copy_of_run20):
    _flip_array_data(copy_of_run20 / "checkpoints" / "20")
    with pytest.raises(FlaxlmError, match=r"checkpoint 20 of .* is unreadable \(checkpoints/20/"):
        read_params(str(copy_of_run20), step=20)
    assert read_params(str(copy_of_run20), step=10)[2] == 10
    assert sorted(os.listdir(copy_of_run20 / "checkpoints")) == ["10", "20"]


@pytest.mark.parametrize("command", [
    ["export", "--workdir", "{wd}", "--out", "{out}"],
    ["fill-mask", "--model", "{wd}", "Roma è la <mask> d'Italia."],
])
def test_cli_on_a_workdir_whose_only_checkpoint_is_damaged(copy_of_run20, tmp_path, command):
    shutil.rmtree(copy_of_run20 / "checkpoints" / "10")
    _flip_array_data(copy_of_run20 / "checkpoints" / "20")
    argv = [a.format(wd=copy_of_run20, out=tmp_path / "bundle") for a in command]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "flaxlm.cli", *argv], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert err[0].startswith("flaxlm: error: ") and "no intact checkpoint: 20 (checkpoints/20/" \
        in err[0] and "nothing was changed" in err[0]
    assert sorted(os.listdir(copy_of_run20 / "checkpoints")) == ["20"]
    assert not os.path.exists(tmp_path / "bundle")

"""Preemption: SIGTERM checkpoints and exits 0, kill -9 loses at most the steps since the last
checkpoint, and either way the resumed run is bit-for-bit the uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from flaxlm.run.checkpoint import read_params
from flaxlm.run.workdir import Workdir
from tests.conftest import IT_EVAL, REPO

STEPS = 30


@pytest.fixture(scope="module")
def corpus(it_small_corpus):
    # A small corpus keeps each process's start-up (tokenizing it) short.
    return it_small_corpus


def _command(workdir, tokenizer, corpus, steps=STEPS):
    return [
        sys.executable, "-m", "flaxlm.cli", "train", "--config",
        os.path.join(REPO, "configs", "tiny.py"), "--workdir",
        str(workdir), "--no-progress", f"--config.data.tokenizer={tokenizer}",
        f"--config.data.train_files={corpus}", f"--config.data.eval_files={IT_EVAL}",
        "--config.data.seq_len=64", "--config.train.batch_size=32", f"--config.train.steps={steps}",
        "--config.train.log_every=1", "--config.train.checkpoint_every=5",
        "--config.model.hidden_dropout=0.1"
    ]


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    return env


def _losses(workdir):
    return {m["step"]: m["loss"] for m in Workdir(workdir).read_metrics() if "loss" in m}


def _wait_for_step(workdir, proc, step, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if max(_losses(workdir), default=0) >= step:
            return
        time.sleep(0.05)
    raise AssertionError(f"run did not reach step {step}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_tokenizer_dir, corpus):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_command(workdir, tiny_tokenizer_dir, corpus), env=_env(), check=True,
                   capture_output=True)
    return workdir


def _assert_same_run(workdir, reference):
    resumed, expected = _losses(workdir), _losses(reference)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert [resumed[s] for s in resumed] == [expected[s] for s in resumed]
    params, _, step = read_params(str(workdir))
    ref_params, _, ref_step = read_params(str(reference))
    assert step == ref_step == STEPS
    import jax
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)


def test_sigterm_checkpoints_exits_zero_and_resumes_bitwise(tmp_path, reference, tiny_tokenizer_dir,
                                                            corpus):
    proc = subprocess.Popen(_command(tmp_path, tiny_tokenizer_dir, corpus), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(tmp_path, proc, 7)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "received SIGTERM; checkpoint saved at step" in out
    stopped_at = max(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert 7 <= stopped_at < STEPS
    subprocess.run(_command(tmp_path, tiny_tokenizer_dir, corpus), env=_env(), check=True,
                   capture_output=True)
    _assert_same_run(tmp_path, reference)


def test_kill_9_resumes_from_last_complete_checkpoint_bitwise(tmp_path, reference,
                                                              tiny_tokenizer_dir, corpus):
    proc = subprocess.Popen(_command(tmp_path, tiny_tokenizer_dir, corpus), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_step(tmp_path, proc, 12)
    proc.kill()
    proc.wait()
    subprocess.run(_command(tmp_path, tiny_tokenizer_dir, corpus), env=_env(), check=True,
                   capture_output=True)
    _assert_same_run(tmp_path, reference)

"""Multi-process training on localhost: 2 processes × 2 CPU devices (gloo) against 1 process × 4.

Every run goes through `launch/local.py` (the same path as a real multi-host start, with
`jax.distributed` and the normal `flaxlm train`). Each process imports TF and JAX (~10 s), so the
four runs are started two at a time: first the 1×4 and 2×2 runs from scratch, then each resumed
from the other's step-2 checkpoint with the other process count.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from flaxlm.models.param_tree import flat_names
from flaxlm.run.checkpoint import read_params
from flaxlm.run.workdir import Workdir
from launch import multihost
from tests.conftest import IT_EVAL, IT_TRAIN, REPO

LOCAL = os.path.join(REPO, "launch", "local.py")
TINY = os.path.join(REPO, "configs", "tiny.py")
STEPS, RESUME_AT = 4, 2


def _launch(processes: int, devices: int, workdir, tokenizer, data_dir, *extra, cache=None,
            train_files=None):
    # A shared compilation cache lets the resumed runs reuse the first runs' executables.
    env = dict(os.environ, **({"JAX_COMPILATION_CACHE_DIR": str(cache)} if cache else {}))
    cmd = [
        sys.executable, LOCAL, "--num-processes",
        str(processes), "--devices-per-process",
        str(devices), "--log-dir", f"{workdir}_logs", "--", "train", "--config", TINY, "--workdir",
        str(workdir), "--no-progress", f"--config.data.tokenizer={tokenizer}",
        f"--config.data.train_files={train_files or data_dir / 'train.txt'}",
        "--config.data.seq_len=32", f"--config.train.steps={STEPS}", "--config.train.log_every=1",
        f"--config.train.checkpoint_every={RESUME_AT}", *extra
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, env=env)


def _wait_ok(*procs):
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out[-4000:]


def _from_checkpoint(src, dst, step):
    """A copy of workdir `src` as it was right after checkpointing `step`."""
    shutil.copytree(src, dst)
    for name in os.listdir(dst / "checkpoints"):
        if name.isdigit() and int(name) > step:
            shutil.rmtree(dst / "checkpoints" / name)
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer_dir):
    data = tmp_path_factory.mktemp("mh_data")
    with open(IT_TRAIN, encoding="utf-8") as f:
        (data / "train.txt").write_text("".join(f.readlines()[:1500]), encoding="utf-8")
    with open(IT_EVAL, encoding="utf-8") as f:
        (data / "eval.txt").write_text("".join(f.readlines()[:40]), encoding="utf-8")
    root = tmp_path_factory.mktemp("mh_runs")
    cache = root / "jax_cache"
    eval_flag = f"--config.data.eval_files={data / 'eval.txt'}"
    one, two = root / "one_x4", root / "two_x2"
    _wait_ok(_launch(1, 4, one, tiny_tokenizer_dir, data, eval_flag, cache=cache),
             _launch(2, 2, two, tiny_tokenizer_dir, data, eval_flag, cache=cache))
    # Resume each run's step-2 checkpoint with the other process count (no eval: not compared).
    two_then_one = _from_checkpoint(two, root / "two_then_one", RESUME_AT)
    one_then_two = _from_checkpoint(one, root / "one_then_two", RESUME_AT)
    no_eval = "--config.data.eval_files="
    _wait_ok(_launch(1, 4, two_then_one, tiny_tokenizer_dir, data, no_eval, cache=cache),
             _launch(2, 2, one_then_two, tiny_tokenizer_dir, data, no_eval, cache=cache))
    return {"one": one, "two": two, "two_then_one": two_then_one, "one_then_two": one_then_two}


def _losses(workdir, key="loss"):
    lines = [m for m in Workdir(workdir).read_metrics() if key in m]
    steps = [m["step"] for m in lines]
    assert len(steps) == len(set(steps)), f"duplicate log lines (only process 0 logs): {steps}"
    return {m["step"]: m[key] for m in lines}


def _assert_same_params(workdir_a, workdir_b):
    params_a, _, step_a = read_params(str(workdir_a))
    params_b, _, step_b = read_params(str(workdir_b))
    assert step_a == step_b == STEPS
    flat_a = {k: np.asarray(v) for k, v in flat_names(params_a).items()}
    flat_b = {k: np.asarray(v) for k, v in flat_names(params_b).items()}
    assert flat_a.keys() == flat_b.keys()
    for name in flat_a:
        np.testing.assert_allclose(flat_b[name], flat_a[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_two_processes_log_the_same_losses_as_one(runs):
    one, two = _losses(runs["one"]), _losses(runs["two"])
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([two[s] for s in sorted(one)], [one[s] for s in sorted(one)], rtol=0,
                               atol=1e-5)
    one_eval, two_eval = _losses(runs["one"], "eval_loss"), _losses(runs["two"], "eval_loss")
    assert list(one_eval) == list(two_eval) == [STEPS]
    np.testing.assert_allclose(two_eval[STEPS], one_eval[STEPS], rtol=0, atol=1e-5)


def test_two_processes_write_the_same_final_parameters(runs):
    _assert_same_params(runs["one"], runs["two"])
    # One checkpoint, written collectively: each process wrote its own shard files.
    params_dir = runs["two"] / "checkpoints" / str(STEPS) / "params"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(params_dir))
    assert (runs["two"] / "tokenizer" / "flaxlm_tokenizer.json").exists()


@pytest.mark.parametrize("resumed", ["two_then_one", "one_then_two"])
def test_checkpoint_resumes_with_another_process_count(runs, resumed):
    reference, losses = _losses(runs["one"]), _losses(runs[resumed])
    assert sorted(losses) == list(range(1, STEPS + 1))  # steps 1-2 kept from the first run
    steps = range(RESUME_AT + 1, STEPS + 1)
    np.testing.assert_allclose([losses[s] for s in steps], [reference[s] for s in steps], rtol=0,
                               atol=1e-5)
    _assert_same_params(runs["one"], runs[resumed])


@pytest.mark.slow
def test_hosts_reading_their_own_units_record_the_host_count(tmp_path, tiny_tokenizer_dir):
    """2 processes each read their own row groups of a Parquet file (data.host_reading=own_units);
    the workdir records the host count, and resuming it on 1 process stops in one line."""
    from flaxlm.data import sources
    from tests.data.test_corpus_files import write_parquet

    docs = list(sources.iter_documents([IT_TRAIN]))[:120]
    parquet = write_parquet(tmp_path / "c.parquet", docs, row_group_size=30)  # 4 row groups
    workdir, own = tmp_path / "run", ("--config.data.host_reading=own_units",
                                      "--config.data.eval_files=")
    _wait_ok(_launch(2, 1, workdir, tiny_tokenizer_dir, tmp_path, *own, train_files=parquet))
    assert sorted(_losses(workdir)) == list(range(1, STEPS + 1))
    assert json.loads(
        (workdir / "config.json").read_text())["host_reading"] == ("own_units on 2 hosts")
    proc = _launch(1, 2, workdir, tiny_tokenizer_dir, tmp_path, *own,
                   f"--config.train.steps={STEPS + 2}", train_files=parquet)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 2, out[-3000:]
    assert ("host_reading = own_units on 2 hosts but the data now gives own_units on 1 host" in out)


def test_local_launcher_reports_a_failed_process(tmp_path):
    # A usage error (no --workdir) fails right after jax.distributed starts, in every process.
    proc = subprocess.run([
        sys.executable, LOCAL, "--num-processes", "2", "--devices-per-process", "1", "--log-dir",
        str(tmp_path), "--", "train", "--config", TINY
    ], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(r"launch/local.py: process [01] of 2 exited with code 2", proc.stderr)
    assert "the following arguments are required: --workdir" in proc.stderr


def test_multihost_arguments():
    args, rest = multihost.parse([
        "--coordinator", "10.0.0.2:8476", "--num-processes", "4", "--process-id", "1", "--",
        "train", "--config", "c.py"
    ])
    assert (args.coordinator, args.num_processes, args.process_id) == ("10.0.0.2:8476", 4, 1)
    assert rest == ["train", "--config", "c.py"]
    args, rest = multihost.parse(["train", "--workdir", "w"])  # Cloud TPU VM: all auto
    assert args.coordinator is None and rest == ["train", "--workdir", "w"]


@pytest.mark.slow
def test_sigterm_checkpoints_the_same_step_on_every_process(tmp_path, tiny_tokenizer_dir):
    """JAX's preemption service picks one step for all hosts; the run exits 0 with a checkpoint."""
    import signal
    import time
    data = tmp_path / "data"
    data.mkdir()
    with open(IT_TRAIN, encoding="utf-8") as f:
        (data / "train.txt").write_text("".join(f.readlines()[:1500]), encoding="utf-8")
    workdir = tmp_path / "run"
    proc = _launch(2, 2, workdir, tiny_tokenizer_dir, data, "--config.train.steps=100000",
                   "--config.train.checkpoint_every=100000", "--config.data.eval_files=")
    deadline = time.monotonic() + 180
    while not any(m.get("step", 0) >= 3 for m in Workdir(workdir).read_metrics()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # launch/local.py passes it to both processes
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "received SIGTERM; checkpoint saved at step" in out
    steps = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
    assert len(steps) == 1 and steps[0] >= 3
    params_dir = workdir / "checkpoints" / str(steps[0]) / "params"
    assert {"ocdbt.process_0", "ocdbt.process_1"} <= set(os.listdir(params_dir))

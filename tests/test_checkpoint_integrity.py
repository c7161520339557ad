"""Checkpoints that decode to other values than were saved (issue 29): per-array fingerprints
checked on restore, NaN/Inf restored state, bounded skipping, the learning-rate floor and a failed
checkpoint write. `tests/storage/test_gcs_integrity.py` runs the same faults on a `gs://` workdir."""

import glob
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from flaxlm.run import checkpoint_integrity
from flaxlm.run.checkpoint import Checkpointer, read_params
from flaxlm.errors import FlaxlmError
from flaxlm.optim import OptimConfig, learning_rate_schedule
from flaxlm.run.skipped_updates import SkippedUpdates
from tests.test_checkpoint_damage import _losses, _train

FIVE_BITS = ((0.21, 1), (0.37, 2), (0.52, 3), (0.68, 4), (0.83, 5))  # (offset share, bit)


def flip_five_bits(path):
    """Five single-bit flips spread over one file, as a disk or bucket returning a few wrong
    bytes would leave it; the file keeps its size and (zstd frames without a checksum) still
    decodes."""
    data = bytearray(open(path, "rb").read())
    for share, bit in FIVE_BITS:
        data[int(len(data) * share)] ^= 1 << bit
    open(path, "wb").write(bytes(data))


def largest_params_file(step_dir):
    return max(glob.glob(os.path.join(step_dir, "params", "**", "d", "*"), recursive=True),
               key=os.path.getsize)


def test_fingerprints_do_not_depend_on_the_sharding_and_see_one_flipped_bit():
    rng = np.random.default_rng(0)
    tree = {
        "params": {
            "w_16x24": rng.standard_normal((16, 24)).astype(np.float32),
            "b_8": rng.standard_normal(8).astype(jnp.bfloat16)
        },
        "step": np.int32(7),
        "rng": np.array([3, 4], np.uint32)
    }
    reference = checkpoint_integrity.compute(tree)[0]
    for shape in ((4, 2), (2, 4), (8, 1)):
        mesh = jax.make_mesh(shape, ("x", "y"))
        shardings = {
            "params": {
                "w_16x24": NamedSharding(mesh, P("x", "y")),
                "b_8": NamedSharding(mesh, P("y"))
            },
            "step": NamedSharding(mesh, P()),
            "rng": NamedSharding(mesh, P())
        }
        assert checkpoint_integrity.compute(jax.device_put(tree, shardings))[0] == reference
    for element, bit in ((0, 0), (200, 31), (383, 17)):
        flipped = tree["params"]["w_16x24"].copy()
        flipped.reshape(-1).view(np.uint32)[element] ^= np.uint32(1 << bit)
        changed = checkpoint_integrity.compute({
            **tree, "params": {
                **tree["params"], "w_16x24": flipped
            }
        })[0]
        assert changed["params.w_16x24"] != reference["params.w_16x24"]
        assert {
            k: v
            for k, v in changed.items() if k != "params.w_16x24"
        } == {
            k: v
            for k, v in reference.items() if k != "params.w_16x24"
        }
    # Two elements swapped: same bytes, other places.
    swapped = tree["params"]["w_16x24"].copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    assert checkpoint_integrity.compute({
        **tree, "params": {
            **tree["params"], "w_16x24": swapped
        }
    })[0]["params.w_16x24"] != reference["params.w_16x24"]


def _small_states(*steps, nan_at=()):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    states = {}
    for step in steps:
        w = np.full((4, 8), float(step), np.float32)
        if step in nan_at:
            w[1, 2] = np.nan
        states[step] = {
            "params": {
                "w_4x8": jax.device_put(w, device)
            },
            "step": jax.device_put(np.int32(step), device)
        }
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            states[steps[0]])
    return states, abstract


def test_a_saved_nan_is_damage_whatever_its_checksum_says(tmp_path, capsys):
    states, abstract = _small_states(2, 4, nan_at=(4, ))
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    for step, state in states.items():
        checkpointer.save(step, state, {"step": step})
    checkpointer.wait()
    capsys.readouterr()
    restored, meta, step = checkpointer.restore_latest_intact(abstract)
    checkpointer.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "flaxlm: checkpoint 4 is damaged (checkpoints/4/params: array params.w_4x8: 1 "
        "non-finite values (NaN/Inf)); moved to checkpoints/4.unreadable, trying 2"
    ]
    assert step == 2 and meta == {"step": 2}  # the fingerprints are not handed on
    np.testing.assert_array_equal(restored["params"]["w_4x8"], states[2]["params"]["w_4x8"])
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4.unreadable"]


def test_a_checkpoint_without_checksums_restores_with_one_line(tmp_path, capsys):
    states, abstract = _small_states(2)
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    checkpointer.save(2, states[2], {"step": 2})
    checkpointer.close()
    meta_file = tmp_path / "checkpoints" / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert set(meta[checkpoint_integrity.META_KEY]["arrays"]) == {"params.w_4x8", "step"}
    del meta[checkpoint_integrity.META_KEY]  # as written before fingerprints existed
    meta_file.write_text(json.dumps(meta))
    capsys.readouterr()
    checkpointer = Checkpointer(str(tmp_path), keep=3)
    restored, _, step = checkpointer.restore_latest_intact(abstract)
    checkpointer.close()
    assert step == 2
    np.testing.assert_array_equal(restored["params"]["w_4x8"], states[2]["params"]["w_4x8"])
    params, _, _ = read_params(str(tmp_path))  # said once per checkpoint and process
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "flaxlm: checkpoint 2 has no recorded checksums (written before flaxlm recorded "
        "them): its values cannot be verified, only checked to be finite"
    ]


@pytest.fixture(scope="module")
def run20(tmp_path_factory, tiny_tokenizer_dir):
    workdir = tmp_path_factory.mktemp("run20")
    assert _train(workdir, tiny_tokenizer_dir, "--config.train.steps=20") == 0
    return workdir


def test_five_flipped_bits_fall_back_to_the_intact_checkpoint_with_one_line(
        run20, tmp_path, tiny_tokenizer_dir, capsys):
    """The issue's case: a few bits flipped inside the newest checkpoint's parameter data,
    nothing truncated, no metadata touched; before, the run resumed on the damaged values."""
    workdir = tmp_path / "run"
    shutil.copytree(run20, workdir)
    flip_five_bits(largest_params_file(workdir / "checkpoints" / "20"))

    capsys.readouterr()  # read-only paths (init_from, export, fill-mask) skip it, renaming nothing
    _, _, step = read_params(str(workdir))
    err = capsys.readouterr().err.strip().splitlines()
    assert step == 10 and len(err) == 1, err
    assert err[0].startswith("flaxlm: checkpoint 20 is damaged (checkpoints/20/params: array "
                             "params.") and " recorded when it was saved" in err[0]
    assert err[0].endswith(", trying 10")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]

    assert _train(workdir, tiny_tokenizer_dir, "--config.train.steps=30") == 0
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flaxlm: checkpoint 20 is damaged ("), err
    assert err[0].endswith("moved to checkpoints/20.unreadable, trying 10")
    assert "resumed from checkpoint 10" in out
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, 31))
    assert all(math.isfinite(losses[s]) for s in range(11, 31))
    assert losses[11] == _losses(run20)[11]  # trained on checkpoint 10's exact values
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20", "20.unreadable", "30"]


def test_a_run_whose_every_update_is_skipped_stops_in_one_line_and_writes_nothing(
        tmp_path, tiny_tokenizer_dir, capsys):
    # A learning rate this large overflows the parameters at the first update: every later
    # loss is non-finite and its update skipped (nan_policy=skip, the default).
    capsys.readouterr()
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.steps=10",
                  "--config.train.learning_rate=1e30", "--config.train.warmup_steps=0") == 2
    out, err = capsys.readouterr()
    assert "done" not in out
    assert err.strip().splitlines() == [
        "flaxlm: error: stopped at step 10 without saving it: 9 of the 10 updates since step 0 "
        "were skipped for a non-finite loss or gradient, more than "
        "train.max_skipped_share=0.1; no checkpoint was written: lower train.learning_rate or "
        "check the data"
    ]
    assert os.listdir(tmp_path / "checkpoints") == []


def test_skipped_updates_count_a_stretch_and_the_share_since_the_last_checkpoint():
    skips = SkippedUpdates(max_in_a_row=3, max_share=0.25, start_step=100, last_checkpoint=100)
    for step, applied in ((101, False), (102, False), (103, True), (104, False)):
        skips.observe(step, applied)  # two in a row, then one: under the limit of 3
    with pytest.raises(
            FlaxlmError, match=r"3 of the 4 updates since step 100 .* newest "
            r"checkpoint is step 100"):
        skips.before_checkpoint(104)
    skips.checkpointed(104)  # (a run that allows it) starts a new window
    skips.observe(105, False)
    with pytest.raises(FlaxlmError, match=r"the last 3 updates \(steps 104–106\) were skipped"):
        skips.observe(106, False)


@pytest.mark.slow
def test_skipped_updates_in_a_row_stop_the_run_before_its_checkpoint(tmp_path, tiny_tokenizer_dir,
                                                                     capsys):
    capsys.readouterr()
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.steps=10",
                  "--config.train.learning_rate=1e30", "--config.train.warmup_steps=0",
                  "--config.train.checkpoint_every=1", "--config.train.max_skipped_in_a_row=3",
                  "--config.train.max_skipped_share=1.0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "flaxlm: error: stopped at step 4: the last 3 updates (steps 2–4) were skipped for a "
        "non-finite loss or gradient (train.max_skipped_in_a_row=3); nothing was saved from "
        "them and the newest checkpoint is step 3: lower train.learning_rate or check the data"
    ]
    # Steps 2 and 3 were saved while the stretch was shorter than the limit: their parameters
    # are step 1's (a skipped update changes nothing), so they are intact.
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2", "3"]


@pytest.mark.parametrize("end", [0.0, 1e-5])
def test_the_learning_rate_never_goes_below_its_end_value(end):
    for horizon in (20, 40, 100, 1000):
        schedule = jax.jit(
            learning_rate_schedule(
                OptimConfig(learning_rate=1e-3, warmup_steps=5, total_steps=horizon,
                            end_learning_rate=end)))
        rates = np.asarray(jax.vmap(schedule)(jnp.arange(5, horizon + 50, dtype=jnp.int32)))
        assert rates.min() >= end, (horizon, rates.min())
        np.testing.assert_allclose(rates[-1], end, rtol=0, atol=1e-9)


# Replaces the checkpoints directory by a file just before step 4 is saved: orbax then fails to
# create the step's directory, as it would on a full or read-only disk.
_BREAK_CHECKPOINTS = """
import os, shutil, sys
from flaxlm import cli
from flaxlm.run import checkpoint
save = checkpoint.Checkpointer.save
def save_on_a_broken_disk(self, step, *args, **kwargs):
    if step == 4:
        self.wait()
        shutil.rmtree(self.directory)
        open(self.directory, "w").write("not a directory")
    return save(self, step, *args, **kwargs)
checkpoint.Checkpointer.save = save_on_a_broken_disk
sys.argv = ["flaxlm", *sys.argv[1:]]
cli.run()
"""


def test_a_failed_checkpoint_write_ends_the_run_in_one_line_with_the_traceback_in_the_log(
        tmp_path, tiny_tokenizer_dir, it_small_corpus):
    from tests.conftest import REPO
    workdir = tmp_path / "run"
    cmd = [
        sys.executable, "-c", _BREAK_CHECKPOINTS, "train", "--config",
        os.path.join(REPO, "configs", "tiny.py"), "--workdir",
        str(workdir), "--no-progress", f"--config.data.tokenizer={tiny_tokenizer_dir}",
        f"--config.data.train_files={it_small_corpus}", "--config.data.eval_files=",
        "--config.data.seq_len=32", "--config.train.steps=6", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2"
    ]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    # Orbax leaves threads waiting 300 s on the directory that was never made; the command
    # line does not wait for them.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(err) == 1, proc.stderr[-3000:]
    log = workdir / "logs" / "train.process0.log"
    assert err[0].startswith(f"flaxlm: error: checkpoint 4 could not be written to {workdir}/"
                             "checkpoints/4: NotADirectoryError: ")
    assert f"(traceback in {log}); the run stopped" in err[0]
    logged = log.read_text()
    assert "Traceback" in logged and "NotADirectoryError" in logged
    assert "done" not in proc.stdout

"""`gs://` paths against a local Cloud Storage emulator: the storage module, the workdir files, a
tokenizer trained into the bucket, and a tiny run stopped by SIGTERM that resumes bitwise."""

import json
import os

import pytest

from flaxlm import storage
from flaxlm.errors import FlaxlmError
from flaxlm.run.metrics_log import MetricsLog
from flaxlm.run.workdir import Workdir
from tests.storage.conftest import BUCKET


def test_storage_module_reads_and_writes_the_bucket(gcs_emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the old defect made a local ./gs:/... directory
    root = f"gs://{BUCKET}/module"
    storage.write_text(f"{root}/a/x.txt", "x")
    storage.write_text(f"{root}/a/b/y.txt", "y")
    assert storage.isdir(f"{root}/a") and storage.isfile(f"{root}/a/x.txt")
    assert not storage.exists(f"{root}/none")
    assert storage.listdir(f"{root}/a") == ["b", "x.txt"]
    assert storage.glob(f"{root}/**/*.txt") == [f"{root}/a/b/y.txt", f"{root}/a/x.txt"]
    local = storage.local_copy(f"{root}/a")
    assert open(os.path.join(local, "b", "y.txt")).read() == "y"
    storage.copy_tree(f"{root}/a", f"{root}/copy")
    assert storage.read_text(f"{root}/copy/b/y.txt") == "y"
    with pytest.raises(ValueError, match="cannot be appended"):
        storage.open_file(f"{root}/a/x.txt", "a")
    # Another host writes into a directory this process has listed: the next listing sees it.
    import urllib.request
    urllib.request.urlopen(
        urllib.request.Request(
            f"{gcs_emulator}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name=module/a/z.txt",
            data=b"z", method="POST"), timeout=10).close()
    assert storage.listdir(f"{root}/a") == ["b", "x.txt", "z.txt"]

    workdir = f"{root}/run"
    Workdir(workdir).probe_writable()
    Workdir(workdir).write_config({"model": {}})
    assert Workdir(workdir).run == {"model": {}}
    log = MetricsLog(workdir)
    log.write(1, {"loss": 2.0})
    log.write(2, {"loss": 1.5})
    log.close()
    log = MetricsLog(workdir)  # a resumed run keeps the earlier lines
    log.write(3, {"loss": 1.0})
    log.close()
    assert [m["step"] for m in Workdir(workdir).read_metrics()] == [1, 2, 3]
    Workdir(workdir).truncate_metrics(2)
    assert [m["step"] for m in Workdir(workdir).read_metrics()] == [1, 2]
    assert storage.listdir(f"{workdir}/tensorboard")  # tensorboardX wrote its event file there
    assert os.listdir(tmp_path) == []

    with pytest.raises(FlaxlmError, match="gs://no-such-bucket/run is not writable"):
        Workdir("gs://no-such-bucket/run").probe_writable()


def test_checkpoints_are_written_to_the_bucket_and_read_back(gcs_emulator):
    """Orbax's OCDBT format through tensorstore's GCS driver, kept-N deletion through epath."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from flaxlm.run.checkpoint import Checkpointer, read_params
    workdir = f"gs://{BUCKET}/ckpt"
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    states = {
        step: {
            "params": {
                "w_2x3": jnp.full((2, 3), float(step))
            },
            "step": jnp.int32(step)
        }
        for step in (2, 4)
    }
    checkpointer = Checkpointer(workdir, keep=1)
    for step, state in states.items():
        checkpointer.save(step, state, {"step": step})
    checkpointer.close()
    assert [n for n in storage.listdir(f"{workdir}/checkpoints") if n.isdigit()] == ["4"]

    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            states[4])
    checkpointer = Checkpointer(workdir, keep=1)
    restored, meta, step = checkpointer.restore_latest_intact(abstract)
    checkpointer.close()
    assert step == 4 and meta["step"] == 4
    jax.tree.map(np.testing.assert_array_equal, restored, states[4])
    params, _, step = read_params(workdir)
    np.testing.assert_array_equal(params["w_2x3"], states[4]["params"]["w_2x3"])


STEPS = 8


def _train(workdir, tokenizer, corpus, **popen):
    import subprocess
    import sys
    from tests.conftest import REPO
    cmd = [
        sys.executable, "-m", "flaxlm.cli", "train", "--config",
        os.path.join(REPO, "configs", "tiny.py"), "--workdir",
        str(workdir), "--no-progress", f"--config.data.tokenizer={tokenizer}",
        f"--config.data.train_files={corpus}", "--config.data.eval_files=",
        "--config.data.seq_len=32", "--config.train.batch_size=8", f"--config.train.steps={STEPS}",
        "--config.train.log_every=1", "--config.train.checkpoint_every=2"
    ]
    # Run from elsewhere (to see that nothing lands in ./gs:/...), importing this checkout.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


def _losses(workdir):
    return {m["step"]: m["loss"] for m in Workdir(str(workdir)).read_metrics() if "loss" in m}


@pytest.mark.slow
def test_gs_workdir_run_stops_on_sigterm_and_resumes_bitwise(gcs_emulator, tmp_path,
                                                             tiny_tokenizer_dir, it_small_corpus):
    import signal
    import time

    import jax
    import numpy as np

    from flaxlm.run.checkpoint import read_params
    bucket = f"gs://{BUCKET}/e2e"
    storage.copy_tree(tiny_tokenizer_dir, f"{bucket}/tokenizer-src")
    storage.copy_tree(os.path.dirname(it_small_corpus), f"{bucket}/text")
    corpus = f"{bucket}/text/{os.path.basename(it_small_corpus)}"
    workdir = f"{bucket}/run"

    reference = _train(tmp_path / "reference", tiny_tokenizer_dir, it_small_corpus)
    run = _train(workdir, f"{bucket}/tokenizer-src", corpus, cwd=tmp_path)
    deadline = time.monotonic() + 900  # start-up takes minutes on a loaded 2-core machine
    while max(_losses(workdir), default=0) < 3:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
        time.sleep(1)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err[-3000:]
    assert "received SIGTERM; checkpoint saved at step" in out
    stopped = max(int(n) for n in storage.listdir(f"{workdir}/checkpoints") if n.isdigit())
    assert 3 <= stopped < STEPS
    resumed = _train(workdir, f"{bucket}/tokenizer-src", corpus, cwd=tmp_path)
    for proc in (resumed, reference):
        assert proc.wait(timeout=300) == 0, proc.communicate()[1][-3000:]
    assert "resumed from checkpoint" in resumed.communicate()[0]

    losses, expected = _losses(workdir), _losses(tmp_path / "reference")
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert losses == expected
    params, _, step = read_params(workdir)
    ref_params, _, ref_step = read_params(str(tmp_path / "reference"))
    assert step == ref_step == STEPS
    jax.tree.map(np.testing.assert_array_equal, params, ref_params)
    for name in ("config.json", "metrics.jsonl", "tokenizer/flaxlm_tokenizer.json"):
        assert storage.isfile(f"{workdir}/{name}"), name
    assert storage.listdir(f"{workdir}/tensorboard")
    assert json.loads(storage.read_text(f"{workdir}/config.json"))["tokenizer"] == "tokenizer"
    assert os.listdir(tmp_path) == ["reference"]  # nothing local under ./gs:/

    from flaxlm.convert.commands import export
    result = export(workdir, f"{bucket}/hf")
    assert result["step"] == STEPS
    assert {"config.json", "model.safetensors", "README.md"} <= set(storage.listdir(f"{bucket}/hf"))


@pytest.mark.slow
def test_two_processes_share_a_gs_workdir(gcs_emulator, tmp_path, tiny_tokenizer_dir,
                                          it_small_corpus):
    """launch/local.py's 2 processes (gloo) write one checkpoint into the bucket, each process
    its own array shards; process 0 alone the metrics."""
    import subprocess
    import sys

    from tests.conftest import REPO
    bucket = f"gs://{BUCKET}/mh"
    storage.copy_tree(tiny_tokenizer_dir, f"{bucket}/tokenizer-src")
    storage.copy_tree(os.path.dirname(it_small_corpus), f"{bucket}/text")
    workdir = f"{bucket}/run"
    cmd = [
        sys.executable,
        os.path.join(REPO, "launch",
                     "local.py"), "--num-processes", "2", "--devices-per-process", "1", "--log-dir",
        str(tmp_path / "logs"), "--", "train", "--config",
        os.path.join(REPO, "configs", "tiny.py"), "--workdir", workdir, "--no-progress",
        f"--config.data.tokenizer={bucket}/tokenizer-src",
        f"--config.data.train_files={bucket}/text", "--config.data.eval_files=",
        "--config.data.seq_len=32", "--config.train.steps=4", "--config.train.log_every=1",
        "--config.train.checkpoint_every=2"
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert [n for n in storage.listdir(f"{workdir}/checkpoints") if n.isdigit()] == ["2", "4"]
    assert {"ocdbt.process_0",
            "ocdbt.process_1"} <= set(storage.listdir(f"{workdir}/checkpoints/4/params"))
    assert sorted(m["step"] for m in Workdir(workdir).read_metrics() if "loss" in m) == [1, 2, 3, 4]

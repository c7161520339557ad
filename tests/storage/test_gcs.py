"""`gs://` paths against a local Cloud Storage emulator: the storage module, the workdir files, a
tokenizer trained into the bucket, and a tiny run stopped by SIGTERM that resumes bitwise."""

import json
import os

import pytest

from flaxlm import storage, workdir as run_dir
from flaxlm.errors import FlaxlmError
from flaxlm.metrics_log import MetricsLog, read_metrics
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

    workdir = f"{root}/run"
    run_dir.probe_writable(workdir)
    run_dir.write_json_atomic(f"{workdir}/config.json", {"model": {}})
    assert run_dir.read_run_config(workdir) == {"model": {}}
    log = MetricsLog(workdir)
    log.write(1, {"loss": 2.0})
    log.write(2, {"loss": 1.5})
    log.close()
    log = MetricsLog(workdir)  # a resumed run keeps the earlier lines
    log.write(3, {"loss": 1.0})
    log.close()
    assert [m["step"] for m in read_metrics(workdir)] == [1, 2, 3]
    run_dir.truncate_metrics(workdir, 2)
    assert [m["step"] for m in read_metrics(workdir)] == [1, 2]
    assert storage.listdir(f"{workdir}/tensorboard")  # tensorboardX wrote its event file there
    assert os.listdir(tmp_path) == []

    with pytest.raises(FlaxlmError, match="gs://no-such-bucket/run is not writable"):
        run_dir.probe_writable("gs://no-such-bucket/run")

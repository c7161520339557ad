"""Issue 29's faults on a `gs://` workdir: a few flipped bits in a checkpoint's array data in the
bucket, and a bucket that refuses the writes of a checkpoint."""

import json
import urllib.parse
import urllib.request

import jax
import numpy as np
import pytest

from flaxlm import storage
from flaxlm.run.checkpoint import Checkpointer, read_params
from flaxlm.errors import CheckpointWriteError
from tests.storage.conftest import BUCKET
from tests.test_checkpoint_integrity import FIVE_BITS


def _objects(url, bucket, prefix=""):
    query = urllib.parse.urlencode({"prefix": prefix})
    with urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}/o?{query}", timeout=10) as r:
        return json.load(r).get("items", [])


def _states(*steps):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    rng = np.random.default_rng(0)
    states = {
        s: {
            "params": {
                "w_64x64": jax.device_put(rng.standard_normal((64, 64)).astype(np.float32), device)
            },
            "step": jax.device_put(np.int32(s), device)
        }
        for s in steps
    }
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            states[steps[0]])
    return states, abstract


def test_flipped_bits_in_the_bucket_fall_back_to_the_intact_checkpoint(gcs_emulator, capsys):
    workdir = f"gs://{BUCKET}/flipped"
    states, abstract = _states(2, 4)
    checkpointer = Checkpointer(workdir, keep=3)
    for step, state in states.items():
        checkpointer.save(step, state, {"step": step})
    checkpointer.close()
    data = max((o for o in _objects(gcs_emulator, BUCKET, "flipped/checkpoints/4/params/")
                if "/d/" in o["name"]), key=lambda o: int(o["size"]))
    path = f"gs://{BUCKET}/{data['name']}"
    with storage.open_file(path, "rb") as f:
        raw = bytearray(f.read())
    for share, bit in FIVE_BITS:
        raw[int(len(raw) * share)] ^= 1 << bit
    storage.write_bytes(path, bytes(raw))

    capsys.readouterr()
    params, _, step = read_params(workdir)
    assert step == 2
    np.testing.assert_array_equal(params["w_64x64"], states[2]["params"]["w_64x64"])
    checkpointer = Checkpointer(workdir, keep=3)
    restored, _, step = checkpointer.restore_latest_intact(abstract)
    checkpointer.close()
    assert step == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("flaxlm: checkpoint 4 is damaged (checkpoints/4/params: array "
                             "params.w_64x64: checksum ") and err[0].endswith(", trying 2")
    assert err[1].endswith("moved to checkpoints/4.unreadable, trying 2")
    assert [n for n in storage.listdir(f"{workdir}/checkpoints")
            if n[0].isdigit()] == ["2", "4.unreadable"]


def test_a_bucket_refusing_the_writes_of_a_checkpoint_is_one_error_naming_it(gcs_emulator):
    bucket = "flaxlm-refusing"
    urllib.request.urlopen(
        urllib.request.Request(f"{gcs_emulator}/storage/v1/b", data=json.dumps({
            "name": bucket
        }).encode(), headers={"Content-Type": "application/json"}, method="POST"),
        timeout=10).close()
    workdir = f"gs://{bucket}/run"
    states, _ = _states(2, 4)
    checkpointer = Checkpointer(workdir, keep=3)
    checkpointer.save(2, states[2], {"step": 2})
    checkpointer.wait()
    # The bucket goes away under the run (deleted, or its permissions revoked).
    for item in _objects(gcs_emulator, bucket):
        urllib.request.urlopen(
            urllib.request.Request(
                f"{gcs_emulator}/storage/v1/b/{bucket}/o/{urllib.parse.quote(item['name'], safe='')}",
                method="DELETE"), timeout=10).close()
    urllib.request.urlopen(
        urllib.request.Request(f"{gcs_emulator}/storage/v1/b/{bucket}", method="DELETE"),
        timeout=10).close()
    with pytest.raises(CheckpointWriteError) as raised:
        checkpointer.save(4, states[4], {"step": 4})
        checkpointer.wait()
    checkpointer.close()  # does not raise the failure a second time
    message = str(raised.value)
    assert message.startswith(f"checkpoint 4 could not be written to {workdir}/checkpoints/4: ")
    assert "\n" not in message and "the checkpoints written before it are kept" in message

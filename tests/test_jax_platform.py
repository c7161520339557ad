"""flaxlm picks JAX's CPU platform on machines without an accelerator, so no command prints
libtpu's TPU-detection errors; a TPU VM (device nodes present) or a user's JAX_PLATFORMS wins."""

import importlib.util
import os
import subprocess
import sys

import pytest

from flaxlm import jax_platform
from tests.conftest import REPO

TINY_CONFIG = os.path.join(REPO, "configs", "tiny.py")
LIBTPU_NOISE = ("TPU_WORKER_HOSTNAMES", "Failed to find host bounds", "Logging before InitGoogle")
no_accelerator_here = pytest.mark.skipif(
    bool(jax_platform.accelerator_nodes()),
    reason="this machine has accelerator device nodes: JAX's own choice applies")


def test_no_accelerator_nodes_means_cpu():
    assert jax_platform.platform_to_force({}, []) == "cpu"
    assert jax_platform.platform_to_force({"JAX_PLATFORMS": ""}, []) == "cpu"


def test_accelerator_nodes_leave_jax_to_choose():
    for node in ("/dev/accel0", "/dev/vfio/0", "/dev/nvidia0"):
        assert jax_platform.platform_to_force({}, [node]) is None


def test_a_users_choice_is_kept():
    assert jax_platform.platform_to_force({"JAX_PLATFORMS": "tpu"}, []) is None
    env = {"JAX_PLATFORMS": "cuda"}
    assert jax_platform.select(env) is None and env == {"JAX_PLATFORMS": "cuda"}


def test_node_patterns_match_tpu_and_gpu_device_files(tmp_path):
    for name in ("accel0", "accel3", "vfio/0", "vfio/12", "nvidia0", "nvidia7"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).touch()
    for name in ("vfio/vfio", "nvidiactl", "nvidia-uvm", "null"):
        (tmp_path / name).touch()
    patterns = [p.replace("/dev", str(tmp_path), 1) for p in jax_platform.ACCELERATOR_NODE_PATTERNS]
    found = sorted(os.path.relpath(p, tmp_path) for p in jax_platform.accelerator_nodes(patterns))
    assert found == ["accel0", "accel3", "nvidia0", "nvidia7", "vfio/0", "vfio/12"]


def _env_without_platform() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    env["XLA_FLAGS"] = ""  # one CPU device, as for a user
    return env


@no_accelerator_here
def test_importing_flaxlm_sets_nothing_and_an_entry_point_selects_cpu():
    """`import flaxlm` has no side effect; an entry point's `select()` picks the CPU, also when
    jax was imported first (a notebook)."""
    code = ("import os, flaxlm, jax; unset = 'JAX_PLATFORMS' not in os.environ; "
            "from flaxlm import jax_platform; jax_platform.select(); "
            "print(unset, os.environ['JAX_PLATFORMS'], jax.devices()[0].platform)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env_without_platform(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "cpu", "cpu"]
    assert not [n for n in LIBTPU_NOISE if n in proc.stderr], proc.stderr


@no_accelerator_here
@pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="the noise comes from libtpu, which is not installed")
def test_cli_command_prints_no_tpu_probe_noise(tmp_path):
    # `train` starts JAX's backends (the mesh) before it refuses a 3-way mesh on one device.
    argv = [
        sys.executable, "-m", "flaxlm.cli", "train", "--config", TINY_CONFIG, "--workdir",
        str(tmp_path / "run"), "--config.mesh.data=3"
    ]
    proc = subprocess.run(argv, cwd=REPO, env=_env_without_platform(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("flaxlm: error: mesh data×fsdp×tensor=3 (data=3, fsdp=1, "
                                   "tensor=1) must equal the 1 devices"), proc.stderr

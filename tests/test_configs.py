"""Every shipped config resolves and runs on the slices its docstring names.

A config lists them in a module-level SLICES tuple, and its docstring names the same ones: TPU
slices as Cloud TPU names them (`v5e-8`, `v4-8`: see flaxlm/topology.py), `cpu-N` for N CPU devices.
On each, the global batch must split into `grad_accum_steps` micro-batches whose rows divide over
the data-parallel chips (mesh data × fsdp), and over the hosts, the checks `flaxlm train` makes
once the mesh exists.
"""

import glob
import importlib.util
import math
import os
import re

import pytest

from flaxlm import run_config, topology
from tests.conftest import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
SLICE_NAME = re.compile(r"\b(?:v\d+[a-z]*-\d+|cpu-\d+)\b")


def _module(path):
    spec = importlib.util.spec_from_file_location(f"config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def devices_and_hosts(slice_name: str) -> tuple[int, int]:
    if slice_name.startswith("cpu-"):
        return int(slice_name[len("cpu-"):]), 1
    slice_ = topology.parse_topology(slice_name)
    return slice_.chips, slice_.hosts  # v4 / v5p chips are one (megacore) JAX device each


def data_parallel_size(mesh, devices: int) -> int:
    sizes = [mesh.data, mesh.fsdp, mesh.tensor]
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        assert devices % fixed == 0, (mesh, devices)
        sizes[sizes.index(-1)] = devices // fixed
    assert math.prod(sizes) == devices, (mesh, devices)
    return sizes[0] * sizes[1]


def test_every_config_is_checked():
    assert {os.path.basename(p)
            for p in CONFIGS} >= {"tiny.py", "demo.py", "flare_it_mlm.py", "xlmr_base_mlm.py"}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_runs_on_the_slices_its_docstring_names(path):
    module = _module(path)
    slices = getattr(module, "SLICES", None)
    assert slices, f"{path}: no SLICES tuple naming where it runs"
    assert set(SLICE_NAME.findall(
        module.__doc__)) == set(slices), (f"{path}: the docstring and SLICES name different slices")
    config = run_config.load(path)
    batch, accum = config.loop.batch_size, config.step.grad_accum_steps
    for name in slices:
        devices, hosts = devices_and_hosts(name)
        dp = data_parallel_size(config.mesh, devices)
        assert batch % (dp * accum) == 0, (
            f"{path} on {name}: batch {batch} in {accum} micro-batches of {batch // accum} rows "
            f"does not divide over {dp} data-parallel devices")
        assert batch % hosts == 0, f"{path} on {name}: batch {batch} over {hosts} hosts"


def test_the_check_refuses_flares_old_accumulation():
    # FLARE's card: 128 accumulation steps on one GPU, 4 rows per micro-batch; an 8-chip slice
    # has 8 data-parallel chips.
    path = os.path.join(REPO, "configs", "flare_it_mlm.py")
    config = run_config.load(path, ["--config.train.grad_accum_steps=128"])
    dp = data_parallel_size(config.mesh, devices_and_hosts("v5e-8")[0])
    assert config.loop.batch_size % (dp * config.step.grad_accum_steps) != 0
    assert config.loop.batch_size == 512 and _module(path).get_config().train.batch_size == 512


def test_docs_and_scripts_name_only_configs_that_exist():
    texts = [
        os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "*.md")),
        *glob.glob(os.path.join(REPO, "tpu_scripts", "*.sh")),
        *glob.glob(os.path.join(REPO, "launch", "*.py")), *CONFIGS
    ]
    missing = set()
    for text_path in texts:
        with open(text_path, encoding="utf-8") as f:
            for name in re.findall(r"\bconfigs/[\w.-]+\.py\b", f.read()):
                if name[len("configs/"):-len(".py")].isupper():  # a placeholder: configs/NAME.py
                    continue
                if not os.path.isfile(os.path.join(REPO, name)):
                    missing.add(f"{os.path.relpath(text_path, REPO)}: {name}")
    assert not missing, sorted(missing)

"""`flaxlm compile`: the real train step compiled for a TPU topology on this CPU-only machine."""

import importlib.util
import os

import pytest

from flaxlm import aot, cli, topology
from flaxlm.errors import FlaxlmError
from flaxlm.sharding import MeshConfig
from tests.conftest import REPO

TINY = os.path.join(REPO, "configs", "tiny.py")
needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install 'flaxlm[tpu]'); flaxlm compile needs it")


def test_topology_names():
    t = topology.parse_topology("v5e-16")
    assert (t.libtpu_name, t.chips, t.hosts) == ("v5e:4x4", 16, 4)
    t = topology.parse_topology("v4-8")  # v4 and v5p names count TensorCores: 4 chips
    assert (t.libtpu_name, t.chips, t.hosts) == ("v4:2x2x1", 4, 1)
    assert topology.parse_topology("v5litepod-8").libtpu_name == "v5e:2x4"
    assert topology.parse_topology("v5p:2x2x2").chips == 8
    assert topology.parse_topology("v6e-8").hosts == 1
    for bad in ("v5e-12", "v3-8", "tpu", "v4-7"):
        with pytest.raises(FlaxlmError):
            topology.parse_topology(bad)


def test_resource_exhausted_numbers():
    temps, total = aot._oom_numbers(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (47.12G) exceeds available HBM (15.75G).")
    assert temps == int(47.12 * (1 << 30)) and total is None
    _, total = aot._oom_numbers("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. "
                                "Used 20.50G of 15.75G hbm. Exceeded hbm capacity by 4.75G.")
    assert total == int(20.5 * (1 << 30))


@pytest.fixture(scope="module")
def tiny_report():
    from flaxlm import run_config
    config = run_config.load(TINY, ["--config.data.seq_len=32", "--config.train.batch_size=16"])
    return aot.compile_train_step(config, "v4-8", MeshConfig(data=2, fsdp=2, tensor=1))


@needs_libtpu
def test_compile_tiny_for_v4_8_reports_memory_and_time(tiny_report):
    r = tiny_report
    assert r.fits and r.chips == 4 and r.mesh == {"data": 2, "fsdp": 2, "tensor": 1}
    for field in ("argument_bytes", "output_bytes", "total_bytes"):
        assert getattr(r, field) > 0, field
    assert r.total_bytes < r.hbm_bytes == 32 << 30
    assert r.xla_step_seconds > 0 and r.xla_flops_per_chip > 0 and 0 < r.mfu < 1
    text = aot.format_report(r)
    assert "v4:2x2x1: 4 × TPU v4" in text and "mesh data=2 fsdp=2 tensor=1" in text
    assert "per-chip memory: arguments" in text and "of 32 GiB HBM: fits" in text
    assert "XLA estimated step time" in text and "implied MFU" in text
    assert text.endswith("verdict: fits on v4-8")


@needs_libtpu
def test_a_batch_that_cannot_fit_is_reported_not_raised(capsys):
    # 262k × 64 tokens of activations on one 16 GiB chip: XLA's compile fails with
    # RESOURCE_EXHAUSTED, which must come out as a verdict with the numbers.
    argv = [
        "compile", "--config", TINY, "--topology", "v5e-1", "--config.data.seq_len=64",
        "--config.train.batch_size=262144"
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "verdict: does not fit on v5e-1" in out
    assert "temporaries" in out and "RESOURCE_EXHAUSTED" in out


def test_fit_search_bisects_to_the_largest_fitting_micro_batch():
    class Report:
        def __init__(self, size):
            self.size, self.fits = size, size <= 12

    sizes = [1, 2, 4, 8, 16, 32, 64]
    tried = []

    def compile_at(size):
        tried.append(size)
        return Report(size)

    assert aot.largest_fitting(sizes, compile_at).size == 8
    assert tried[0] == 64 and len(tried) <= 4  # largest first, then bisection
    tried.clear()
    assert aot.largest_fitting([3, 6, 12], compile_at).size == 12 and tried == [12]
    assert aot.largest_fitting([16, 32], compile_at) is None


@pytest.mark.parametrize(
    "peak_gib, compiles",
    [
        (lambda s: 1 + 0.25 * s, 2),  # linear: 128 misses by a little, 64 is the first guess
        (lambda s: 1 + 0.25 * s + 0.002 * s * s, 3),  # superlinear: the first guess is too small
        (lambda s: 20 + 0.01 * s, 1),  # 128 fits
        (lambda s: 40 + s, 3),  # nothing fits: two refusals give the fixed part, then size 1
        (lambda s: 1 + 0.2 * s + 20 * (s >= 32), 3),  # a step: the first guess is too large
    ])
def test_fit_search_guided_by_memory_finds_what_every_compile_would(peak_gib, compiles):
    """With byte counts the search compiles the sizes its reports predict and still returns the
    largest size that fits, the size above it compiled and refused; bisection needs 4 here."""
    gib = 1 << 30

    class Report:
        def __init__(self, size):
            self.size, self.total_bytes = size, peak_gib(size) * gib
            self.argument_bytes, self.hbm_bytes = 1 * gib, 32 * gib
            self.fits = self.total_bytes <= self.hbm_bytes

    sizes = [1, 2, 4, 8, 16, 32, 64, 128]
    tried = []

    def compile_at(size):
        tried.append(size)
        return Report(size)

    found = aot.largest_fitting(sizes, compile_at)
    fitting = [s for s in sizes if peak_gib(s) <= 32]
    assert (found.size if found else None) == (fitting[-1] if fitting else None), tried
    if fitting and fitting[-1] != sizes[-1]:
        assert sizes[sizes.index(fitting[-1]) + 1] in tried  # the refusal above the answer
    assert len(tried) == compiles, tried


def test_fit_tries_remat_only_above_what_fits_without_it(monkeypatch):
    """`full` remat recomputes the forward pass: at a micro-batch `none` already holds it is only
    slower, so its search starts above `none`'s answer (saving compiles of minutes each)."""
    from flaxlm import run_config
    config = run_config.load(TINY, ["--config.train.batch_size=64"])
    limit = {"none": 16, "full": 32}  # the largest micro-batch each policy holds

    class Report:
        def __init__(self, remat, micro):
            self.remat, self.micro, self.grad_accum_steps = remat, micro, 64 // micro
            self.fits, self.total_bytes, self.verdict = micro <= limit[remat], None, ""
            self.xla_step_seconds = 1.0 + (remat == "full") * 0.3 + 0.01 * self.grad_accum_steps

    def compile_train_step(trial, topo, mesh_config):
        return Report(trial.model_config.remat, 64 // trial.step.grad_accum_steps)

    monkeypatch.setattr(aot, "compile_train_step", compile_train_step)
    monkeypatch.setattr(aot, "topology_devices", lambda topo: None)
    monkeypatch.setattr(aot, "make_mesh", lambda mesh, devices: None)
    monkeypatch.setattr(aot, "data_parallel_size", lambda mesh: 1)
    best, tried = aot.fit_micro_batch(config, "v5e-1", log=lambda line: None)
    assert [(r.remat, r.micro) for r in tried if r.remat == "full"] == [("full", 64), ("full", 32)]
    assert (best.remat, best.micro) == ("none", 16)  # full at 32 is slower in this cost
    limit["none"] = 64
    best, tried = aot.fit_micro_batch(config, "v5e-1", log=lambda line: None)
    assert [(r.remat, r.micro) for r in tried] == [("none", 64)]


@needs_libtpu
def test_fit_with_the_splash_kernel_compiles_for_tpu(capsys):
    # The Pallas splash kernel lowers for a TPU target, per shard of a data-parallel mesh, and
    # --fit reports the micro-batch and the accumulation it implies.
    argv = [
        "compile", "--config", TINY, "--topology", "v5e-4", "--fit", "--config.data.seq_len=128",
        "--config.train.batch_size=16", "--config.model.attention=splash",
        "--config.model.attention_dropout=0.0"
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "fit: remat none, micro-batch 4/chip (grad_accum_steps 1)" in out
    assert ("fitted: micro-batch 4 per chip with model.remat=none: "
            "--config.train.grad_accum_steps=1 for the global batch 16") in out
    assert "attention splash, remat none" in out and "verdict: fits on v5e-4" in out

"""TPU slices as `flaxlm compile` names them: generations (HBM size and bandwidth per chip), slice
shapes, hosts, and the compile-only devices libtpu describes for a slice (no TPU needed).

`parse_topology("v5e-16")` → a `Topology`; `topology_devices(topology)` → devices to build a mesh
on and compile for (flaxlm/aot.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import re
import sys
import tempfile
from typing import Any

from flaxlm.errors import FlaxlmError

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Generation:
    name: str  # libtpu's topology prefix
    hbm_bytes: int
    dims: int  # 2-D (v5e, v6e) or 3-D (v4, v5p) torus
    cores_in_name: bool  # v4-8 / v5p-8 count TensorCores (2 per chip); v5e-8 / v6e-8 count chips
    megacore: bool  # both TensorCores of a chip act as one JAX device
    single_host_chips: int  # largest slice served by one host
    hbm_bytes_per_second: float  # for the roofline when XLA gives no usable optimal_seconds


# HBM size and bandwidth per chip from the Cloud TPU system-architecture pages.
GENERATIONS = {
    "v4": Generation("v4", 32 * GiB, 3, True, True, 4, 1228e9),
    "v5e": Generation("v5e", 16 * GiB, 2, False, False, 8, 819e9),
    "v5p": Generation("v5p", 95 * GiB, 3, True, True, 4, 2765e9),
    "v6e": Generation("v6e", 32 * GiB, 2, False, False, 8, 1640e9),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}
# Slice shapes of Cloud TPU accelerator types, by chip count.
_SHAPES = {
    2: {
        1: (1, 1),
        4: (2, 2),
        8: (2, 4),
        16: (4, 4),
        32: (4, 8),
        64: (8, 8),
        128: (8, 16),
        256: (16, 16)
    },
    3: {
        4: (2, 2, 1),
        8: (2, 2, 2),
        16: (2, 2, 4),
        32: (2, 4, 4),
        64: (4, 4, 4),
        128: (4, 4, 8),
        256: (4, 8, 8),
        512: (8, 8, 8),
        1024: (8, 8, 16),
        2048: (8, 16, 16),
        4096: (16, 16, 16)
    },
}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # as given: v5e-16, v4-8, v5p:2x2x2 ...
    generation: Generation
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def libtpu_name(self) -> str:
        return f"{self.generation.name}:{'x'.join(map(str, self.shape))}"

    @property
    def host_shape(self) -> tuple[int, int, int]:
        shape3 = (*self.shape, 1)[:3]
        if self.chips <= self.generation.single_host_chips:
            return shape3
        return (min(2, shape3[0]), min(2, shape3[1]), 1)

    @property
    def hosts(self) -> int:
        return self.chips // math.prod(self.host_shape)


def parse_topology(name: str) -> Topology:
    """`v5e-16`, `v5litepod-16`, `v4-8` (TensorCores), `v6e-8`, or libtpu's `v5e:4x4` form."""
    known = ", ".join(sorted(GENERATIONS))
    text = name.strip().lower()
    m = re.fullmatch(r"([a-z0-9]+)[-:](\d+(?:x\d+)*)", text)
    gen = m and GENERATIONS.get(_ALIASES.get(m.group(1), m.group(1)))
    if not gen:
        raise FlaxlmError(f"--topology {name!r}: expected GEN-N (e.g. v5e-16, v4-8) or GEN:AxB[xC] "
                          f"with GEN one of {known}")
    count = m.group(2)
    if "x" in count or ":" in text:
        shape = tuple(int(s) for s in count.split("x"))
        if len(shape) != gen.dims:
            raise FlaxlmError(f"--topology {name!r}: {gen.name} slices have {gen.dims} dimensions")
    else:
        n = int(count)
        chips = n // 2 if gen.cores_in_name else n
        shape = _SHAPES[gen.dims].get(chips)
        if shape is None or (gen.cores_in_name and n % 2):
            sizes = sorted(2 * c if gen.cores_in_name else c for c in _SHAPES[gen.dims])
            raise FlaxlmError(f"--topology {name!r}: no {gen.name} slice of that size; known: " +
                              ", ".join(f"{gen.name}-{s}" for s in sizes))
    return Topology(name, gen, shape)


def topology_devices(topology: Topology) -> list:
    """Compile-only devices of the slice (no TPU needed, but libtpu must be installed)."""
    if importlib.util.find_spec("libtpu") is None:
        raise FlaxlmError("flaxlm compile needs libtpu: pip install 'flaxlm[tpu]' "
                          "(jax[tpu], which brings libtpu)")
    # A compile-only client never touches a chip: do not take libtpu's one-process-per-host lock
    # (another JAX process on this machine may hold it).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    kwargs: dict[str, Any] = {"chips_per_host_bounds": topology.host_shape}
    if topology.generation.megacore:
        kwargs["chip_config_name"] = "megacore"
    with _libtpu_chatter_hidden():
        return list(topologies.get_topology_desc(topology.libtpu_name, "tpu", **kwargs).devices)


@contextlib.contextmanager
def _libtpu_chatter_hidden():
    """libtpu warns on stderr (C level) that this is no TPU VM; shown only if loading fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)

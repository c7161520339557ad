"""Pick JAX's CPU platform on machines without an accelerator, before JAX starts.

With the `tpu` extra installed, libtpu probes for TPU chips whenever JAX initializes its backends
and, on a machine without any, prints several lines of TPU-detection errors to stderr
(`TPU_WORKER_HOSTNAMES`, `Failed to find host bounds`, `Logging before InitGoogle`). Every flaxlm
entry point (`flaxlm.cli.main`, the demo, the benchmarks' mains) calls `select()` first: with
no accelerator device node on the machine and no `JAX_PLATFORMS` chosen by the user, JAX is told
to use the CPU.
A TPU VM (or a GPU machine) has device nodes and keeps JAX's own choice. The Makefile's JAX_ENV
rule uses the same nodes.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Iterable, MutableMapping

# TPU v4/v5p chips appear as /dev/accel*, v5e/v6e as VFIO groups, NVIDIA GPUs as /dev/nvidia<N>.
ACCELERATOR_NODE_PATTERNS = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*")


def accelerator_nodes(patterns: Iterable[str] = ACCELERATOR_NODE_PATTERNS) -> list[str]:
    return [path for pattern in patterns for path in glob.glob(pattern)]


def platform_to_force(environ: MutableMapping[str, str], nodes: list[str]) -> str | None:
    """"cpu" when JAX would only find the CPU anyway; None to leave JAX's choice alone.

    An empty JAX_PLATFORMS counts as unset, as in the Makefile's `${JAX_PLATFORMS:-cpu}`.
    """
    if environ.get("JAX_PLATFORMS") or nodes:
        return None
    return "cpu"


def select(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Applies `platform_to_force` for this machine; returns what it forced, if anything."""
    platform = platform_to_force(environ, accelerator_nodes())
    if platform is None:
        return None
    environ["JAX_PLATFORMS"] = platform  # read by JAX at import, and by child processes
    jax = sys.modules.get("jax")
    # Imported before flaxlm (a notebook's `import jax` first): its config already read the
    # environment, but backends start lazily, so the setting still applies if nobody chose one.
    if jax is not None and not jax.config.jax_platforms:
        jax.config.update("jax_platforms", platform)
    return platform

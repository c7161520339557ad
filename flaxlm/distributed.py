"""Joining a multi-process JAX job: the one call every host makes before any computation.

On Cloud TPU VM slices (and SLURM / Open MPI clusters) JAX finds the coordinator, the number of
processes and this process's id by itself; elsewhere (other clusters, local tests) they are given.
"""

from __future__ import annotations

import jax


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """`jax.distributed.initialize`; all None: auto-detected (Cloud TPU VM, SLURM, Open MPI).
    A second call (launch/multihost.py running `flaxlm train --distributed`) does nothing."""
    if jax.distributed.is_initialized():
        return
    # Cross-process collectives for computations on CPU devices (local multi-process runs, CPU
    # clusters). Has no effect on TPU or GPU computations.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)

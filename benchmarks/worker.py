"""`python -m benchmarks.worker`: one runner in its own process (see protocol.py)."""

from __future__ import annotations

import importlib

from benchmarks.common import configure_threads
from benchmarks.protocol import serve

# Worker kind -> runner module (each has `build(spec)`).
RUNNERS = {
    "flaxlm-step": "benchmarks.runners.flaxlm_step",
    "flaxlm-step-unpacked": "benchmarks.runners.flaxlm_step",
    "hf-torch-eager": "benchmarks.runners.hf_torch",
    "hf-torch-compile": "benchmarks.runners.hf_torch",
    "pipeline": "benchmarks.runners.pipeline",
    "pipeline-step": "benchmarks.runners.pipeline",
    "checkpoint": "benchmarks.runners.checkpoint",
}


def build(spec: dict):
    configure_threads(spec["threads"])
    return importlib.import_module(RUNNERS[spec["kind"]]).build(spec)


if __name__ == "__main__":
    serve(build)

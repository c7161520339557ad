"""Shapes of each run profile, thread pinning, and small statistics (standard library only; the
platform rule is flaxlm's, imported where it is used)."""

from __future__ import annotations

import dataclasses
import math
import os
import statistics


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    model: dict  # encoder shape shared by every framework
    batch: int
    seq: int
    vocabs: tuple[int, ...]
    steps: int  # timed steps per worker and comparison (medians are taken over these)
    rounds: int  # the timed steps are split into this many interleaved rounds (= steps: the
    # two sides alternate step by step, so load that drifts within seconds hits both alike)
    warmup: int  # untimed steps after compilation
    pipeline_batches: int
    checkpoint_saves: int
    tokenizer_vocab: int
    tokenizer_lines: int  # 0: the whole corpus
    in_process: bool = False
    skip: tuple[str, ...] = ()  # baselines this profile leaves out


MINILM_L6_H384 = dict(hidden=384, layers=6, heads=12, ffn=1536)
TINY = dict(hidden=64, layers=2, heads=4, ffn=128)

PROFILES = {
    # The shapes: MiniLM-L6-H384, batch 16 × seq 128, BERT and XLM-R vocabularies.
    "full": Profile("full", MINILM_L6_H384, batch=16, seq=128, vocabs=(30_522, 250_002), steps=6,
                    rounds=6, warmup=1, pipeline_batches=300, checkpoint_saves=3,
                    tokenizer_vocab=8000, tokenizer_lines=0),
    "quick": Profile("quick", MINILM_L6_H384, batch=16, seq=128, vocabs=(30_522, ), steps=5,
                     rounds=5, warmup=1, pipeline_batches=100, checkpoint_saves=2,
                     tokenizer_vocab=8000, tokenizer_lines=0),
    # CI: every code path once, tiny shapes, no timing claims, no throwaway virtualenv.
    "smoke": Profile("smoke", TINY, batch=4, seq=32, vocabs=(1000, ), steps=2, rounds=1, warmup=1,
                     pipeline_batches=4, checkpoint_saves=1, tokenizer_vocab=500,
                     tokenizer_lines=400, in_process=True,
                     skip=("hf-flax", "hf-torch-compile", "flaxlm-step-unpacked")),
}


def max_predictions(seq: int, mask_rate: float = 0.15) -> int:
    """flaxlm's prediction slots M for a sequence length (mirrors data.pipeline.max_predictions)."""
    return min(seq, 8 * math.ceil((mask_rate * seq * 1.2 + 8) / 8))


def expected_predictions(seq: int, mask_rate: float = 0.15) -> int:
    """Real masked tokens per packed example: 15% of the non-special tokens."""
    return max(1, round(mask_rate * (seq - 2)))


def available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def configure_threads(n: int) -> None:
    """Pin this process to n cores, before jax/torch/tensorflow are imported.

    XLA:CPU sizes its intra-op pool from the CPU affinity mask, torch from `set_num_threads`
    (the torch runner calls it with the same n), OpenMP/MKL from the variables below.
    """
    cpus = available_cpus()
    os.sched_setaffinity(0, cpus[:n])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def default_platform_env() -> dict[str, str]:
    """JAX_PLATFORMS=cpu where no accelerator is attached, so an installed libtpu does not probe:
    flaxlm/jax_platform.py's rule, for the workers' environment."""
    # Read first: importing flaxlm applies the rule to this process's own environment.
    chosen = os.environ.get("JAX_PLATFORMS", "")
    from flaxlm.jax_platform import accelerator_nodes, platform_to_force
    platform = platform_to_force({"JAX_PLATFORMS": chosen}, accelerator_nodes())
    return {"JAX_PLATFORMS": platform} if platform else {}


def median(xs) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")

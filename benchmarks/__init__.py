"""flaxlm's benchmark suite: `python -m benchmarks.run` (see docs/benchmarks.md).

This package must stay importable with the standard library alone: the Hugging Face Flax baseline
runs `benchmarks.hf_flax_worker` under a throwaway virtualenv that has no flaxlm installed.
"""

"""flaxlm: compact multilingual encoder language models in JAX/Flax, released for PyTorch users.

Importing it has no side effect: the entry points (flaxlm/cli.py, flaxlm/demo.py, the benchmarks'
mains) pick JAX's platform first (flaxlm/jax_platform.py).
"""

__version__ = "0.1.0"

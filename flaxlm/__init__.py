"""flaxlm: compact multilingual encoder language models in JAX/Flax, released for PyTorch users."""

from flaxlm import jax_platform as _jax_platform

# Before anything imports jax: no TPU-probe noise on machines without an accelerator.
_jax_platform.select()

__version__ = "0.1.0"

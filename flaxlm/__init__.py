"""flaxlm: compact multilingual encoder language models in JAX/Flax, released for PyTorch users."""

__version__ = "0.1.0"

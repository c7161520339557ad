"""Shared test setup: 8 fake CPU devices so sharding is real, and quiet TensorFlow."""

import os

# Must be set before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IT_TRAIN = os.path.join(REPO, "data", "it", "train.txt")
IT_EVAL = os.path.join(REPO, "data", "it", "eval.txt")

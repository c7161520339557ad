"""CPU smoke configuration: a 2-layer, 64-wide XLM-R-shaped encoder on the Italian sample.

Expected: loss falls from ~ln(vocab) within tens of steps; used by the tests.
Slices: cpu-1 (one CPU device), cpu-8 (the tests' 8 fake devices, as
XLA_FLAGS=--xla_force_host_platform_device_count=8 makes them).
Run:
  flaxlm train --config configs/tiny.py --workdir runs/tiny \
      --config.data.tokenizer=runs/tok --config.train.steps=20
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-1", "cpu-8")


def get_config():
    c = base_config()
    c.model.preset = "tiny"
    c.data.train_files = "data/it/train.txt"
    c.data.eval_files = "data/it/eval.txt"
    c.data.seq_len = 64
    c.train.steps = 20
    c.train.batch_size = 8
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 5
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    return c

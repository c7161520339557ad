"""ELECTRA on CPU: a 2-layer, 128-wide discriminator and its 32-wide generator on the Spanish sample.

The SELECTRA recipe (configs/selectra_small.py) at a size that trains in minutes on 2 CPU cores:
the same objective (15% of words, 85% [MASK] / 15% kept, Gumbel sampling at temperature 1,
generator + 50 × discriminator), a cased Spanish WordPiece vocabulary of 2,048 entries trained on
data/es/train.txt into the workdir (accents kept), batch 16 × 64 for 1,200 steps, warmup then
linear decay. Expected: held-out
discriminator accuracy clearly above the always-"original" baseline (1 − eval_replaced_rate) and a
replaced-token recall well above zero (docs/electra.md has the numbers).
Slices: cpu-1, cpu-8 (SLICES below; tests/test_configs.py checks the batch divides on each).
Run:
  nice -n 10 flaxlm train --config configs/electra_tiny.py --workdir runs/electra-tiny
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-1", "cpu-8")


def get_config():
    c = base_config()
    c.objective.name = "electra"
    c.model.preset = "electra-tiny"
    c.model.max_position_embeddings = 64
    c.data.train_files = "data/es/train.txt"
    c.data.eval_files = "data/es/eval.txt"
    c.data.tokenizer_kind = "wordpiece"
    c.data.tokenizer_vocab_size = 2048
    c.data.seq_len = 64
    c.train.steps = 1200
    c.train.batch_size = 16
    c.train.learning_rate = 2e-3
    c.train.warmup_steps = 100
    c.train.log_every = 50
    c.train.eval_every = 300
    c.train.checkpoint_every = 300
    return c

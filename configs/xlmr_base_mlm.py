"""XLM-R base MLM pre-training (250k SentencePiece vocabulary), the shape of the XLM-R recipe.

Batch 1024 × 512 in 4 accumulation steps: a micro-batch of 8 sequences per chip on 32
data-parallel chips (8.05 GiB of a v5e chip's 16 in docs/scaling.md's topology table), 4 on 64.
Accumulation is exact (the loss is normalized once over the whole batch), so the update is the
one of a single 1024-sequence step.
Slices: v5e-32, v5e-64, v4-64, v6e-32 (SLICES below; tests/test_configs.py checks the batch
divides on each).
Run (TPU pod slice, on every host):
  flaxlm train --distributed --config configs/xlmr_base_mlm.py --workdir gs://BUCKET/xlmr \
      --config.data.tokenizer=TOKENIZER_DIR --config.data.train_files=PREPARED_DIR
"""

from flaxlm.run_config import base_config

SLICES = ("v5e-32", "v5e-64", "v4-64", "v6e-32")


def get_config():
    c = base_config()
    c.objective.name = "mlm"
    c.model.preset = "xlmr-base"
    c.data.train_files = "data/it/train.txt"
    c.data.seq_len = 512
    c.train.steps = 100_000
    c.train.batch_size = 1024
    c.train.grad_accum_steps = 4
    c.train.learning_rate = 6e-4
    c.train.warmup_steps = 10_000
    c.train.compute_dtype = "auto"  # bf16 on TPU/GPU (fp32 weights, optimizer, loss); fp32 CPU
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    return c

"""FLARE-style continued MLM pre-training of an mMiniLMv2 L6×H384 on Italian (whole-word masking).

Recipe (from the FLARE model card): seq 512, batch 512, AdamW, lr 5e-5 with linear decay, 10k
steps, dynamic whole-word masking. The card reaches batch 512 through 128 accumulation steps on
one GPU (micro-batches of 4); here the same 512-sequence update is 8 micro-batches of 64, split
over the slice's data-parallel chips. Accumulation is exact in flaxlm (losses are summed over the
whole batch and normalized once), so only memory and speed change, not the update. 8 steps keep
each micro-batch divisible by up to 64 data-parallel chips; 128 steps would leave 4 rows per
micro-batch, fewer than the chips of an 8-chip slice. Per chip that is a micro-batch of 16 × 512
on v4-8 and v5p-8 (`flaxlm compile --topology v4-8`: 7.3 GiB of a v4 chip's 32), 8 on v5e-8 and
v6e-8 (3.3 and 4.3 GiB in docs/scaling.md's topology table), 4 on v5e-16 and 2 on v5e-32.
Slices: v4-8, v5p-8, v5e-8, v6e-8, v5e-16, v5e-32 (SLICES below; tests/test_configs.py checks
the batch divides on each).
Start from an imported checkpoint (`flaxlm import --hf MINILM_DIR --out runs/mminilm`), whose
tokenizer is reused.
Run (TPU VM):
  flaxlm train --config configs/flare_it_mlm.py --workdir gs://BUCKET/flare \
      --config.init_from=runs/mminilm --config.data.train_files=tfds:wikipedia/20230601.it
"""

from flaxlm.run_config import base_config

SLICES = ("v4-8", "v5p-8", "v5e-8", "v6e-8", "v5e-16", "v5e-32")


def get_config():
    c = base_config()
    c.objective.name = "mlm"
    c.model.preset = "minilm-l6-h384"
    c.data.train_files = "data/it/train.txt"
    c.data.eval_files = "data/it/eval.txt"
    c.data.seq_len = 512
    c.train.steps = 10_000
    c.train.batch_size = 512
    c.train.grad_accum_steps = 8
    c.train.learning_rate = 5e-5
    c.train.warmup_steps = 0
    c.train.compute_dtype = "auto"  # bf16 on TPU/GPU (fp32 weights, optimizer, loss); fp32 CPU
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.checkpoint_every = 500
    return c

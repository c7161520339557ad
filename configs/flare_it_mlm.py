"""FLARE-style continued MLM pre-training of an mMiniLMv2 L6×H384 on Italian (whole-word masking).

Recipe (from the FLARE model card): seq 512, batch 512 reached through 128 accumulation steps,
AdamW, lr 5e-5 with linear decay, 10k steps, dynamic whole-word masking. Start from an imported
checkpoint (`flaxlm import --hf MINILM_DIR --out runs/mminilm`), whose tokenizer is reused.
Run (TPU VM):
  flaxlm train --config configs/flare_it_mlm.py --workdir gs://BUCKET/flare \
      --config.init_from=runs/mminilm --config.data.train_files=tfds:wikipedia/20230601.it
"""

from flaxlm.run_config import base_config


def get_config():
    c = base_config()
    c.model.preset = "minilm-l6-h384"
    c.data.train_files = "data/it/train.txt"
    c.data.eval_files = "data/it/eval.txt"
    c.data.seq_len = 512
    c.train.steps = 10_000
    c.train.batch_size = 512
    c.train.grad_accum_steps = 128
    c.train.learning_rate = 5e-5
    c.train.warmup_steps = 0
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.checkpoint_every = 500
    return c

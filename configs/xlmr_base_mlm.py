"""XLM-R base MLM pre-training (250k SentencePiece vocabulary), the shape of the XLM-R recipe.

Run (TPU pod slice):
  flaxlm train --config configs/xlmr_base_mlm.py --workdir gs://BUCKET/xlmr \
      --config.data.tokenizer=TOKENIZER_DIR --config.data.train_files=PREPARED_DIR
"""

from flaxlm.run_config import base_config


def get_config():
    c = base_config()
    c.model.preset = "xlmr-base"
    c.data.train_files = "data/it/train.txt"
    c.data.seq_len = 512
    c.train.steps = 100_000
    c.train.batch_size = 1024
    c.train.learning_rate = 6e-4
    c.train.warmup_steps = 10_000
    c.train.compute_dtype = "bfloat16"
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    return c

"""SELECTRA medium: configs/selectra_small.py's recipe at hidden = embedding = 384.

Discriminator (preset selectra-medium): 12 layers, hidden = embedding = 384, 6 heads, FFN 1536,
50,000 cased WordPiece entries — recognai/selectra `convert_to_hftransformers/config_medium.json`,
`electra/configure_pretraining.py` (embedding_size = 384 for "medium"), `hparams/
pretrain_medium.json` (do_lower_case false, max_seq_length 512). ≈ 40.7M parameters without the
discriminator head (tests/test_electra.py checks within 1%). Generator: 384 × 0.25 = 96 hidden,
12 layers, FFN 384, 1 head (google-research/electra `run_pretraining.get_generator_config`).
Objective and schedule as the small config: lr 5e-4, warmup 10k, linear decay, batch 128 × 512,
300k steps with a warm LR restart after 150k.
Slices: v4-8, v5e-8 (SLICES below; tests/test_configs.py checks the batch divides on each).
Run (TPU VM):
  flaxlm train --config configs/selectra_medium.py --workdir gs://BUCKET/selectra-medium \
      --config.data.tokenizer=runs/selectra-tok --config.data.train_files=PREPARED_DIR
"""

from flaxlm.run_config import base_config

SLICES = ("v4-8", "v5e-8")


def get_config():
    c = base_config()
    c.objective.name = "electra"
    c.objective.electra.mask_rate = 0.15
    c.objective.electra.mask_token_rate = 0.85
    c.objective.electra.random_token_rate = 0.0
    c.objective.electra.generator_hidden_fraction = 0.25
    c.objective.electra.temperature = 1.0
    c.objective.electra.discriminator_weight = 50.0
    c.model.preset = "selectra-medium"
    c.data.train_files = "data/es/train.txt"
    c.data.eval_files = "data/es/eval.txt"
    c.data.tokenizer_kind = "wordpiece"
    c.data.seq_len = 512
    c.train.steps = 300_000
    c.train.restart_steps = "150000"
    c.train.batch_size = 128
    c.train.learning_rate = 5e-4
    c.train.warmup_steps = 10_000
    c.train.weight_decay = 0.01
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 5_000
    return c

"""SELECTRA small: Spanish ELECTRA pre-training (generator + discriminator), whole-word masking.

Shapes, each checked against its source:
* discriminator (preset selectra-small): 12 layers, hidden = embedding = 256, 4 heads, FFN 1024,
  50,000 cased WordPiece entries, 512 positions, 2 token types — recognai/selectra
  `convert_to_hftransformers/config_small.json`; `electra/configure_pretraining.py` sets
  embedding_size = 256 for "small" (google-research/electra's small used 128);
  `electra/util/training_utils.get_bert_config`: heads = hidden // 64, FFN = 4 × hidden.
  ≈ 22.4M parameters without the discriminator head (tests/test_electra.py checks within 1%).
* generator: hidden 256 × 0.25 = 64, 12 layers, FFN 256, 1 head, the shared 256-wide
  embeddings projected to 64 — google-research/electra `run_pretraining.get_generator_config`
  with `configure_pretraining.py`'s generator_hidden_size = 0.25, generator_layers = 1.0.
* objective: 15% masked, 85% [MASK] / 15% kept (google-research/electra@8a46635
  `pretrain/pretrain_helpers.py:201-205`), sampling temperature 1 over the whole vocabulary,
  disallow_correct false, uniform_generator false (`configure_pretraining.py:69,76,79`), loss =
  generator + 50 × discriminator (`configure_pretraining.py:38-39`), cased input
  (`hparams/pretrain_small.json`: do_lower_case false; accents are never stripped).
  Departure, kept on purpose: flaxlm masks whole words (all sub-tokens of 15% of the words);
  upstream masks single tokens (`pretrain_helpers.mask`, positions drawn with replacement, at
  most `max_predictions_per_seq` = int((0.15 + 0.005) · 512) = 77). Upstream's masking:
  --config.objective.electra.whole_word_masking=false --config.objective.electra.max_predictions=77
  (docs/electra.md, "Against google-research/electra", lists the remaining differences).
* schedule: lr 5e-4, warmup 10k, linear decay, weight decay 0.01 (`configure_pretraining.py`);
  batch 128 × seq 512 (`configure_pretraining.py` train_batch_size, `pretrain_small.json`
  max_seq_length); 300k steps with a warm restart of the LR schedule after 150k (the SELECTRA
  model card; the repository's `pretrain_small.json` asks for num_train_steps = 3,000,000, which
  the card's released model did not follow).
Slices: v4-8, v5e-8 (SLICES below; tests/test_configs.py checks the batch divides on each).
Tokenizer (once): flaxlm tokenizer --type wordpiece --vocab-size 50000 --corpus OSCAR_ES_TEXT \
      --out runs/selectra-tok
Run (TPU VM):
  flaxlm train --config configs/selectra_small.py --workdir gs://BUCKET/selectra-small \
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
    c.model.preset = "selectra-small"
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
    c.train.compute_dtype = "auto"  # bf16 on TPU/GPU (fp32 weights, optimizer, loss); fp32 CPU
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.checkpoint_every = 5_000
    return c

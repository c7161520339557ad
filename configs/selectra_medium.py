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

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "selectra_small", os.path.join(os.path.dirname(os.path.abspath(__file__)), "selectra_small.py"))
_small = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_small)

SLICES = _small.SLICES


def get_config():
    c = _small.get_config()  # the recipe is the small one's; only the model differs
    c.model.preset = "selectra-medium"
    return c

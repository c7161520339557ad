"""PAWS-X, Spanish: paraphrase identification (different_meaning / paraphrase) with SELECTRA's
fine-tuning recipe.

Hyper-parameters from the SELECTRA model card ("Some details of our fine-tuning runs"): 5 epochs,
batch 32, learning rate 1e-4, warmup proportion 0.1, linear decay, layer-wise learning-rate decay
(finetune.layer_decay). The card does not give the decay factor; 0.8 is the general default of
ELECTRA's configure_finetuning.py (`layerwise_lr_decay`, line 56 at 8a46635; 0.9 for large models,
line 151), which ELECTRA applies one power deeper than flaxlm (model/optimization.py
`_get_layer_lrs`: top layer 0.8², embeddings 0.8^(L+2)). This config keeps flaxlm's style (top
layer × 0.8), with which docs/finetuning*.md measured; --config.finetune.layer_decay_style=electra
gives ELECTRA's exactly. Card result, 5 trials: SELECTRA small and medium PAWS-X accuracy 0.896 ±
0.002.
Data: TFDS `paws_x_wiki/es` train (49,401 pairs), validation (dev) and test; TFDS must have
prepared it (`tfds build paws_x_wiki/es`); nothing downloads here.
Slices: cpu-8, v5e-8, v4-8.
Run:
  flaxlm finetune --config configs/pawsx_es.py --workdir runs/pawsx_es \
      --config.init_from=runs/selectra_small --config.finetune.seeds=5
  flaxlm evaluate --workdir runs/pawsx_es
  flaxlm export --workdir runs/pawsx_es/seed-0 --out exports/pawsx_es
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-8", "v5e-8", "v4-8")
EPOCHS, BATCH = 5, 32


def get_config():
    c = base_config()
    c.objective.name = "sequence_classification"
    c.finetune.epochs = EPOCHS
    c.finetune.layer_decay = 0.8
    c.data.train_files = "tfds:paws_x_wiki/es:train"
    c.data.eval_files = "tfds:paws_x_wiki/es:validation"
    c.data.test_files = "tfds:paws_x_wiki/es:test"
    c.data.seq_len = 128
    c.train.batch_size = BATCH
    c.train.learning_rate = 1e-4
    c.train.schedule = "linear"
    c.train.warmup_proportion = 0.1  # of the steps the epochs plan
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    return c

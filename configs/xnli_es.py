"""XNLI, Spanish: natural language inference (entailment / neutral / contradiction), SELECTRA's
fine-tuning recipe, whose exported model serves `flaxlm zero-shot` and transformers'
zero-shot-classification pipeline.

Hyper-parameters from the SELECTRA model card ("Some details of our fine-tuning runs"): 5 epochs,
batch 32, learning rate 1e-4, warmup proportion 0.1, linear decay, layer-wise learning-rate decay
(finetune.layer_decay). The card does not give the decay factor; 0.8 is the general default of
ELECTRA's configure_finetuning.py (`layerwise_lr_decay`, line 56 at 8a46635; 0.9 for large models,
line 151), which ELECTRA applies one power deeper than flaxlm (model/optimization.py
`_get_layer_lrs`: top layer 0.8², embeddings 0.8^(L+2)). This config keeps flaxlm's style (top
layer × 0.8), with which docs/finetuning*.md measured; --config.finetune.layer_decay_style=electra
gives ELECTRA's exactly. Card result, 5 trials: SELECTRA small XNLI accuracy 0.784 ± 0.002, medium
0.804 ± 0.002.
Labels are fixed to TFDS's class order, so the export's label2id has `entailment`.
Data: TFDS `xtreme_xnli` train (MultiNLI machine-translated to Spanish, ~392,702 pairs) and `xnli`
validation (dev) and test, Spanish side (objective.sequence_classification.language). TFDS must
have prepared both (`tfds build xnli xtreme_xnli`); nothing downloads here.
Slices: cpu-8, v5e-8, v4-8.
Run:
  flaxlm finetune --config configs/xnli_es.py --workdir runs/xnli_es \
      --config.init_from=runs/selectra_small --config.finetune.seeds=5
  flaxlm evaluate --workdir runs/xnli_es
  flaxlm export --workdir runs/xnli_es/seed-0 --out exports/xnli_es
  flaxlm zero-shot --model exports/xnli_es --labels deportes,política,tecnología \
      --template "Este ejemplo es {}." "El equipo ganó la final de la copa."
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-8", "v5e-8", "v4-8")
EPOCHS, BATCH = 5, 32


def get_config():
    c = base_config()
    c.objective.name = "sequence_classification"
    c.objective.sequence_classification.labels = "entailment,neutral,contradiction"
    c.objective.sequence_classification.language = "es"
    c.finetune.epochs = EPOCHS
    c.finetune.layer_decay = 0.8
    c.data.train_files = "tfds:xtreme_xnli:train"
    c.data.eval_files = "tfds:xnli:validation"
    c.data.test_files = "tfds:xnli:test"
    c.data.seq_len = 128
    c.train.batch_size = BATCH
    c.train.learning_rate = 1e-4
    c.train.schedule = "linear"
    c.train.warmup_proportion = 0.1  # of the steps the epochs plan
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    return c

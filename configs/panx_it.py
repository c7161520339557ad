"""PAN-X Italian NER (XTREME's WikiANN split), entity P/R/F1 in IOB2: the XLM-R PAN-X card.

Recipe (xlm-roberta-base-finetuned-panx-it card): 3 epochs, learning rate 5e-5, batch 24, Adam
β 0.9/0.999, ε 1e-8, linear decay without warmup, seed 42; transformers Trainer's defaults
otherwise (no weight decay, gradient clipping at 1.0). Card result: validation entity F1 0.8124
after epoch 3, with a per-epoch table of training loss, validation loss and F1, which
`flaxlm evaluate` prints in the same layout. Best epoch by dev entity F1, then evaluated once on
test into results.json.
Data: PAN-X `it` as XTREME lays it out (`it:token<TAB>label` lines, files train, dev, test) is
not shipped here: point the data.*_files keys at your copy.
Start from xlm-roberta-base imported with `flaxlm import` or given as its Hugging Face directory.
Slices: cpu-8, v5e-8, v4-8 (SLICES below).
Run:
  flaxlm finetune --config configs/panx_it.py --workdir runs/panx_it \
      --config.init_from=hf/xlm-roberta-base
  flaxlm evaluate --workdir runs/panx_it
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-8", "v5e-8", "v4-8")


def get_config():
    c = base_config()
    c.objective.name = "token_classification"
    c.objective.token_classification.format = "panx"
    c.objective.token_classification.selection = "entity_f1"
    c.finetune.epochs = 3
    c.seed = 42
    c.model.preset = "xlmr-base"  # shapes come from init_from when it is set
    c.data.train_files = "data/panx/it/train"
    c.data.eval_files = "data/panx/it/dev"
    c.data.test_files = "data/panx/it/test"
    c.data.seq_len = 128
    c.train.batch_size = 24
    c.train.learning_rate = 5e-5
    c.train.schedule = "linear"
    c.train.warmup_steps = 0
    c.train.weight_decay = 0.0
    c.train.b1 = 0.9
    c.train.b2 = 0.999
    c.train.eps = 1e-8
    c.train.log_every = 20
    c.train.checkpoint_every = 10_000  # epochs are checkpointed when evaluated
    c.train.keep_checkpoints = 1
    return c

"""FLARE POS tagging: UD Italian ISDT, UPOS, token-level macro P/R/F1 (the FLARE model card).

Recipe (FLARE card): 5 epochs at a constant learning rate of 1e-5 (train.schedule=constant); the
card gives no batch size, warmup or weight decay, so those are transformers Trainer's defaults (no
warmup, no weight decay, Adam ε 1e-8) and batch 32. The best epoch by dev macro F1 is kept
(best.json).
Data: the official ISDT train split is not available here (../shared/data/README.md), so this
trains on ISDT *dev* (564 sentences) and evaluates on ISDT *test* (482): say so when reporting.
Start from a pre-trained flaxlm workdir (`flaxlm train` MLM, or `flaxlm import` of mMiniLMv2 /
FLARE); its tokenizer and shapes are used, its encoder loaded, the classifier starts fresh.
Slices: cpu-8 (a few minutes for a small model), v5e-8 (SLICES below).
Run:
  flaxlm finetune --config configs/pos_it_isdt.py --workdir runs/pos_it \
      --config.init_from=runs/pre
  flaxlm evaluate --workdir runs/pos_it
  flaxlm export --workdir runs/pos_it --out release/pos_it
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-8", "v5e-8")


def get_config():
    c = base_config()
    c.objective.name = "token_classification"
    c.objective.token_classification.format = "conllu"
    c.finetune.epochs = 5
    c.objective.token_classification.selection = "macro_f1"
    c.model.preset = "minilm-l6-h384"  # shapes come from init_from when it is set
    c.data.train_files = "../shared/data/ud/it_isdt-ud-dev.conllu"
    c.data.eval_files = "../shared/data/ud/it_isdt-ud-test.conllu"
    c.data.seq_len = 128
    c.train.batch_size = 32
    c.train.learning_rate = 1e-5
    c.train.schedule = "constant"
    c.train.warmup_steps = 0
    c.train.weight_decay = 0.0
    c.train.eps = 1e-8
    c.train.log_every = 5
    c.train.checkpoint_every = 1000  # epochs are checkpointed when evaluated
    c.train.keep_checkpoints = 1
    return c

"""FLARE NER: WikiNER Italian, 5-fold cross-validation, token-level macro P/R/F1 (FLARE card).

Recipe (FLARE card): 3 epochs at a constant learning rate of 1e-5, 5-fold cross-validation over
the corpus, precision/recall/F1 per label macro-averaged over labels (not entity-level). The card
gives no batch size, warmup or weight decay: as configs/pos_it_isdt.py, transformers Trainer's
defaults (no warmup, no weight decay, Adam ε 1e-8) and batch 32. Fold i evaluates on the i-th of
5 contiguous slices of the corpus (in file order) and trains on the other four; each fold keeps
its best epoch by macro F1, and results.json reports every fold and the mean ± sample std.
Data: WikiNER Italian (`aij-wikiner-it-wp3`, `token|POS|label` words, one sentence per line) is
not shipped here: download it and point --config.data.train_files at it.
Start from a pre-trained flaxlm workdir or a Hugging Face directory (FLARE, mMiniLMv2).
Slices: cpu-8, v5e-8 (SLICES below).
Run:
  flaxlm finetune --config configs/ner_it_wikiner.py --workdir runs/ner_it \
      --config.init_from=runs/flare --config.data.train_files=data/aij-wikiner-it-wp3
  flaxlm evaluate --workdir runs/ner_it
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-8", "v5e-8")


def get_config():
    c = base_config()
    c.objective.name = "token_classification"
    c.objective.token_classification.format = "wikiner"
    c.objective.token_classification.selection = "macro_f1"
    c.finetune.epochs = 3
    c.finetune.folds = 5
    c.model.preset = "minilm-l6-h384"  # shapes come from init_from when it is set
    c.data.train_files = "data/aij-wikiner-it-wp3"
    c.data.seq_len = 128
    c.train.batch_size = 32
    c.train.learning_rate = 1e-5
    c.train.schedule = "constant"
    c.train.weight_decay = 0.0
    c.train.eps = 1e-8
    c.train.log_every = 20
    c.train.checkpoint_every = 10_000  # epochs are checkpointed when evaluated
    c.train.keep_checkpoints = 1
    return c

"""SELECTRA NER: CoNLL-2002 Spanish, entity P/R/F1 in IOB2 (seqeval's default mode).

Recipe (SELECTRA model card, "Fine-tuning" section): 5 epochs, batch 32, lr 1e-4, warmup over
10% of the steps, linear decay, layer-wise learning-rate decay. The card does not give the decay
factor; 0.8 is ELECTRA's fine-tuning default (`layerwise_lr_decay`). flaxlm's definition: the
classifier at the base rate, top layer × 0.8, each layer below one more factor, the embeddings
one factor below the bottom layer (flaxlm/objectives/token_classification.py). The card reports
the mean ± std of 5 seeds: --config.finetune.seeds=5 (runs seed-0 … seed-4, results.json
aggregates them). Best epoch by dev (esp.testa) entity F1, then evaluated once on test
(esp.testb) into results.json.
Data: ../shared/data/conll2002 (train esp.train, dev esp.testa, test esp.testb).
Start from a pre-trained cased Spanish flaxlm workdir (SELECTRA-like ELECTRA/BERT or an import).
Slices: cpu-8, v5e-8 (SLICES below).
Run:
  flaxlm finetune --config configs/ner_es_conll2002.py --workdir runs/ner_es \
      --config.init_from=runs/selectra --config.finetune.seeds=5
  flaxlm evaluate --workdir runs/ner_es
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-8", "v5e-8")


def get_config():
    c = base_config()
    c.objective.name = "token_classification"
    c.objective.token_classification.format = "conll2002"
    c.finetune.epochs = 5
    c.finetune.layer_decay = 0.8
    c.objective.token_classification.selection = "entity_f1"
    c.model.preset = "bert-base-multilingual"  # shapes come from init_from when it is set
    c.data.train_files = "../shared/data/conll2002/esp.train"
    c.data.eval_files = "../shared/data/conll2002/esp.testa"
    c.data.test_files = "../shared/data/conll2002/esp.testb"
    c.data.seq_len = 128
    c.train.batch_size = 32
    c.train.learning_rate = 1e-4
    c.train.warmup_proportion = 0.1
    c.train.schedule = "linear"  # to 0 over the 5 epochs
    c.train.log_every = 20
    c.train.checkpoint_every = 10_000  # epochs are checkpointed when evaluated
    c.train.keep_checkpoints = 1
    return c

"""Sentence-pair classification on real Spanish text: do two paragraphs come from the same
document of ../shared/data/corpus/es.txt? (labels `different`, `same`; built by
flaxlm/data/same_document.py, documents dealt to train/dev/test before pairing.)

A small task that runs the whole pair path (readers, `[CLS] a [SEP] b [SEP]` / `<s> a </s></s> b
</s>` encoding, longest-first truncation, the sequence-classification head, export) on CPU. It
starts from a pre-trained flaxlm workdir or an imported Hugging Face model (the encoder is
loaded, the classifier head starts fresh) and keeps SELECTRA's fine-tuning recipe (batch 32,
lr 1e-4, 10% warmup, linear decay, layer-wise LR decay 0.8 in flaxlm's style: top layer × 0.8,
not ELECTRA's 0.8², see configs/xnli_es.py) with 3 epochs.
Slices: cpu-1, cpu-8 (the tests' fake devices), v5e-8.
Run:
  python -m flaxlm.data.same_document ../shared/data/corpus/es.txt data/pairs_es
  flaxlm finetune --config configs/pairs_es_same_doc.py --workdir runs/pairs_es \
      --config.init_from=runs/pretrained
  flaxlm export --workdir runs/pairs_es --out exports/pairs_es
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-1", "cpu-8", "v5e-8")
EPOCHS, BATCH = 3, 32


def get_config():
    c = base_config()
    c.objective.name = "sequence_classification"
    c.finetune.epochs = EPOCHS
    c.finetune.layer_decay = 0.8
    c.data.train_files = "data/pairs_es/train.tsv"
    c.data.eval_files = "data/pairs_es/dev.tsv"
    c.data.test_files = "data/pairs_es/test.tsv"
    c.data.seq_len = 128
    c.train.batch_size = BATCH
    c.train.learning_rate = 1e-4
    c.train.warmup_proportion = 0.1  # of the steps the epochs plan
    c.train.log_every = 10
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 1
    return c

"""`make demo`'s fine-tuning: UD Italian POS on the ISDT sample shipped in data/it/ud.

300 training sentences (ISDT dev 1–300), 100 for choosing the epoch (dev 301–400), 200 for the
test (ISDT test 1–200); data/it/ud/PROVENANCE.md. The model is the demo's encoder: `make demo`
runs this config twice, with `--config.init_from=<pre-trained demo workdir>` and from random
init with the same shapes (configs/demo.py), and compares their test accuracy.
Departures from configs/pos_it_isdt.py (the FLARE recipe, 5 epochs at 1e-5 for a 17M-parameter
MiniLM): a constant 1e-3 and 15 epochs, which a 2 × 128 encoder needs to converge on 300 sentences
(docs/finetuning.md "POS on UD ISDT": at 1e-5 it barely moves), dropout 0.1 in both arms, and the
best epoch chosen by accuracy on the dev slice, never on the test sentences.
Run (after `make demo`, which does this itself):
  flaxlm finetune --config configs/demo_pos.py --workdir runs/demo-pos \
      --config.init_from=runs/demo/pretrain
Slices: cpu-1.
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-1", )


def get_config():
    c = base_config()
    c.objective.name = "token_classification"
    c.objective.token_classification.format = "conllu"
    c.objective.token_classification.selection = "accuracy"
    c.finetune.epochs = 15
    c.model.preset = "minilm-l6-h384"  # shapes come from init_from when it is set
    c.model.hidden_dropout = 0.1
    c.model.attention_dropout = 0.1
    c.model.classifier_dropout = 0.1
    c.data.train_files = "data/it/ud/train.conllu"
    c.data.eval_files = "data/it/ud/dev.conllu"
    c.data.test_files = "data/it/ud/test.conllu"
    c.data.seq_len = 128
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.schedule = "constant"
    c.train.warmup_steps = 0
    c.train.weight_decay = 0.0
    c.train.log_every = 10
    c.train.checkpoint_every = 1000  # epochs are checkpointed when evaluated
    c.train.keep_checkpoints = 1
    return c

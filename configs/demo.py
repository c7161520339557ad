"""The `make demo` pre-training: a small MiniLM-shaped MLM on the shipped Italian sample, 2 CPU cores.

Same architecture family as mMiniLMv2 (XLM-R embeddings with padding-offset positions, post-LN,
exact GELU, 32-dimensional heads), narrowed to 2 layers × 128 so it trains in minutes on a CPU.
Post-LN from scratch first sits on a unigram plateau (the commonest token at every <mask>) and
leaves it after ~1,200 steps at lr 1e-3 (docs/demo.md, measured against transformers' own
XLMRobertaForMaskedLM of the same shape). The demo trains 1,200 steps at 1e-3 (100 warmup, linear
decay) so that pre-training and both POS fine-tunings (configs/demo_pos.py) fit in 8 minutes of
training on 2 cores; the 3,000-step run of 2026-12-02 reached 0.052 at <mask> against 0.035 for
the commonest token (`--steps 3000` runs that length again).
Run:
  flaxlm tokenizer --corpus data/it/train.txt --vocab-size 4000 --type unigram --out runs/demo-tok
  flaxlm train --config configs/demo.py --workdir runs/demo --config.data.tokenizer=runs/demo-tok
(`make demo` does both, then fine-tunes for POS, exports and queries the models.)
Slices: cpu-1 (one CPU device, what `make demo` uses).
"""

from flaxlm.run_config import base_config

SLICES = ("cpu-1", )


def get_config():
    c = base_config()
    c.model.preset = "minilm-l6-h384"
    c.model.num_layers = 2
    c.model.hidden_size = 128
    c.model.num_heads = 4
    c.model.intermediate_size = 512
    c.model.hidden_dropout = 0.0
    c.model.attention_dropout = 0.0
    c.data.train_files = "data/it/train.txt"
    c.data.eval_files = "data/it/eval.txt"
    c.data.seq_len = 64
    c.train.steps = 1200
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 100
    c.train.weight_decay = 0.01
    c.train.log_every = 10
    c.train.eval_every = 400
    c.train.checkpoint_every = 400
    return c

"""The `make demo` run: a small MiniLM-shaped MLM on the shipped Italian sample, on 2 CPU cores.

Same architecture family as mMiniLMv2 (XLM-R embeddings with padding-offset positions, post-LN,
exact GELU, 32-dimensional heads), narrowed to 4 layers × 192 so several hundred steps fit in
minutes on a CPU. Post-LN from scratch sits on a unigram plateau at first; a 100-step warmup to a
high peak learning rate gets it off quickly (with a 30-step warmup it stayed there for 400 steps).
Expected: held-out MLM accuracy far above the most-frequent-token baseline (see docs/demo.md).
Run:
  flaxlm tokenizer --corpus data/it/train.txt --vocab-size 4000 --type unigram --out runs/demo-tok
  flaxlm train --config configs/demo.py --workdir runs/demo --config.data.tokenizer=runs/demo-tok
(`make demo` does both and then exports and queries the model.)
"""

from flaxlm.run_config import base_config


def get_config():
    c = base_config()
    c.model.preset = "minilm-l6-h384"
    c.model.num_layers = 4
    c.model.hidden_size = 192
    c.model.num_heads = 6
    c.model.intermediate_size = 768
    c.model.hidden_dropout = 0.0
    c.model.attention_dropout = 0.0
    c.data.train_files = "data/it/train.txt"
    c.data.eval_files = "data/it/eval.txt"
    c.data.seq_len = 64
    c.train.steps = 800
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 100
    c.train.weight_decay = 0.01
    c.train.log_every = 10
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    return c

"""The FLARE chain: mMiniLMv2 L6×H384 → pruned, uncased Italian vocabulary → WWM MLM → POS, NER.

This file is the chain's continued pre-training stage. It extends `configs/flare_it_mlm.py` (the
same MLM recipe: seq 512, batch 512, AdamW, lr 5e-5 with linear decay to 0 over 10k steps,
dynamic whole-word masking) and starts from the pruned, uncased workdir of stage 2 instead of the
full 250k-token vocabulary; everything else, including its reasoning on accumulation, is that
file's. The card's batch 512 came from 128 accumulation steps of 4 on one GPU; flaxlm's
accumulation is exact (losses summed over the whole batch, normalized once), so the 8 steps of
64 used here give the same update. `--config.train.grad_accum_steps=128` reproduces the card
literally wherever 4 rows divide over the data-parallel chips (v4-8, v5p-8: 4 JAX devices).
Slices: v4-8, v5p-8, v5e-8, v6e-8, v5e-16, v5e-32 (SLICES below).

Stages (docs/vocab_pruning.md):
  1. import (mMiniLMv2 ships no tokenizer: XLM-R's is named)
       flaxlm import --hf MMINILM_DIR --tokenizer XLMR_BASE_DIR --out runs/flare/imported
  2. prune at 0.1% of Italian Wikipedia documents, uncased (or count on many hosts with
     `flaxlm doc-freq --shard I/N` and pass `--counts counts-*.npz`)
       flaxlm prune-vocab --model runs/flare/imported \
           --corpus tfds:wikipedia/20230601.it --heldout data/it/eval.txt \
           --min-doc-freq 0.001 --uncase --out runs/flare/pruned
  3. continued MLM pre-training (this file; a TPU VM)
       flaxlm train --config configs/flare_it.py --workdir gs://BUCKET/flare/mlm \
           --config.init_from=runs/flare/pruned
  4. POS (UD Italian ISDT) and NER (WikiNER) fine-tuning, with the fine-tuning configs
       flaxlm train --config configs/pos_it_isdt.py --workdir runs/flare/pos \
           --config.init_from=gs://BUCKET/flare/mlm
       flaxlm train --config configs/ner_es_conll2002.py --workdir runs/flare/ner \
           --config.init_from=gs://BUCKET/flare/mlm \
           --config.objective.token_classification.format=wikiner \
           --config.data.train_files=WIKINER_IT_TRAIN --config.data.eval_files=WIKINER_IT_DEV
           (WikiNER has no official split: FLARE reports 5-fold cross-validation)
  5. export, each with parity against transformers
       flaxlm export --workdir gs://BUCKET/flare/mlm --out releases/flare-it
       flaxlm export --workdir runs/flare/pos --out releases/flare-it-pos
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "flare_it_mlm", os.path.join(os.path.dirname(os.path.abspath(__file__)), "flare_it_mlm.py"))
_mlm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mlm)

SLICES = _mlm.SLICES


def get_config():
    c = _mlm.get_config()
    c.init_from = "runs/flare/pruned"  # stage 2's workdir: its tokenizer and shapes are used
    c.data.train_files = "tfds:wikipedia/20230601.it"
    c.data.eval_files = "data/it/eval.txt"
    return c

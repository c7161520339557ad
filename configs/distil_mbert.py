"""DistilmBERT: a 6 × 768 DistilBERT student (134.7M parameters without the MLM head) distilled
from 12-layer multilingual BERT.

DistilBERT (arXiv 1910.01108) as transformers' examples/research_projects/distillation README
trains it: loss = 5.0 × soft-target KL at temperature 2 (× T²) + 2.0 × MLM + 1.0 × cosine of the
last hidden states; the student starts from the teacher's embeddings, MLM head and layers
[0, 2, 4, 7, 9, 11]; Adam lr 5e-4 with 5% warmup, eps 1e-6, no weight decay, gradients clipped at
5.0 (its train.py defaults), β2 0.98 (distiller.py's AdamW betas). The soft targets cover every real
token (distiller.py without --restrict_ce_to_mask, as the README command runs), so both vocabulary
projections run at all 512 positions. Departures (flaxlm/objectives/distill_bert.py): positions
to predict are 15% of each row's words drawn uniformly, not by --mlm_smoothing 0.7 frequency
weights. Its batches were 5 sequences × 50 accumulation steps × 8 GPUs ≈ 2000;
here 2048 × 512 in 32 accumulation steps: 64 sequences per micro-batch, 8 per chip on 8 chips.
Slices: v5e-8, v4-8, v5e-16 (SLICES below; tests/test_configs.py checks the batch divides on
each).
The teacher is a flaxlm workdir (`flaxlm import --hf bert-base-multilingual-cased --out
runs/mbert`); the student reads the teacher's tokenizer.
Run (TPU VM):
  flaxlm train --config configs/distil_mbert.py --workdir gs://BUCKET/distilmbert \
      --config.objective.distilbert.teacher=runs/mbert \
      --config.data.tokenizer=runs/mbert/tokenizer --config.data.train_files=PREPARED_DIR
Compile only (the teacher's shapes from teacher_preset):
  flaxlm compile --config configs/distil_mbert.py --topology v5e-8
"""

from flaxlm.run_config import base_config

SLICES = ("v5e-8", "v4-8", "v5e-16")


def get_config():
    c = base_config()
    c.objective.name = "distilbert"
    c.objective.distilbert.teacher_preset = "bert-base-multilingual"
    c.objective.distilbert.temperature = 2.0
    c.objective.distilbert.alpha_ce = 5.0
    c.objective.distilbert.alpha_mlm = 2.0
    c.objective.distilbert.alpha_cos = 1.0
    c.objective.distilbert.teacher_layers = "0,2,4,7,9,11"
    c.objective.distilbert.teacher_bf16 = True
    c.model.preset = "distilbert-base-multilingual"
    c.data.train_files = "data/it/train.txt"
    c.data.seq_len = 512
    c.train.steps = 50_000
    c.train.batch_size = 2048
    c.train.grad_accum_steps = 32
    c.train.learning_rate = 5e-4
    c.train.warmup_proportion = 0.05
    c.train.weight_decay = 0.0
    c.train.eps = 1e-6
    c.train.b2 = 0.98
    c.train.max_grad_norm = 5.0
    c.train.compute_dtype = "auto"  # bf16 on TPU/GPU (fp32 weights, optimizer, loss); fp32 CPU
    c.train.log_every = 100
    c.train.checkpoint_every = 5000
    c.mesh.data = 1
    c.mesh.fsdp = -1
    return c

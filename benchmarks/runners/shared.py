"""Pieces several runners share: the benchmark tokenizer and corpus, the PyTorch baselines'
weight-decay rule, and the timing loop behind every `run(n)`.

Standard library only at import time: benchmarks/hf_flax_worker.py imports `timed_steps` under a
throwaway virtualenv that has no flaxlm installed (flaxlm is imported inside the functions).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(REPO, "data", "it", "train.txt")


def corpus_and_tokenizer(spec: dict) -> tuple[str, str]:
    """(corpus path, tokenizer dir): a SentencePiece unigram tokenizer trained once on the corpus
    (or its first `tokenizer_lines` lines) and cached under `cache_dir`."""
    from flaxlm.data.tokenizers import load_tokenizer, train_tokenizer
    vocab, lines = spec["tokenizer_vocab"], spec["tokenizer_lines"]
    root = os.path.join(spec["cache_dir"], f"it-unigram{vocab}-lines{lines or 'all'}")
    corpus, tok_dir = CORPUS, os.path.join(root, "tokenizer")
    if lines:
        corpus = os.path.join(root, "corpus.txt")
        if not os.path.exists(corpus):
            os.makedirs(root, exist_ok=True)
            with open(CORPUS, encoding="utf-8") as f:
                text = "\n".join(f.read().split("\n")[:lines])
            with open(corpus + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(corpus + ".tmp", corpus)
    try:
        load_tokenizer(tok_dir)
    except Exception:  # noqa: BLE001 - not there yet (or half-written): train it
        train_tokenizer([corpus], vocab_size=vocab, kind="unigram", out_dir=tok_dir)
    return corpus, tok_dir


def no_weight_decay(name: str) -> bool:
    """PyTorch baselines' AdamW skips weight decay on biases and LayerNorm, as flaxlm's does."""
    return name.endswith("bias") or "LayerNorm" in name or "layernorm" in name.lower()


def baseline_adamw(named_params):
    """The PyTorch baselines' optimizer: AdamW(lr 1e-4, β 0.9/0.999, ε 1e-6), weight decay 0.01
    except on biases and LayerNorm. `named_params`: (name, tensor) pairs, each tensor once."""
    import torch
    named_params = list(named_params)
    decay = [p for n, p in named_params if not no_weight_decay(n)]
    no_decay = [p for n, p in named_params if no_weight_decay(n)]
    return torch.optim.AdamW([{
        "params": decay,
        "weight_decay": 0.01
    }, {
        "params": no_decay,
        "weight_decay": 0.0
    }], lr=1e-4, betas=(0.9, 0.999), eps=1e-6)


def timed_steps(step: Callable[[], Any], n: int, loss_of: Callable[[Any], float] = float) -> dict:
    """`run(n)`'s answer: the wall time of each of n calls of `step` (which returns only once its
    work is done) and the last call's loss, read by `loss_of` after the clock stops."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = step()
        times.append(time.perf_counter() - t)
    return {"times": times, "loss": loss_of(out)}

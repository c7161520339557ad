"""Parity: the Flax model and the PyTorch transformers model must compute the same function.

Run on a fixed batch of real text tokenized by the HF tokenizer, padded (so padding masks and
XLM-R's padding-aware positions are exercised), fp32, eval mode.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from flaxlm.convert.tokenizer_files import SAMPLE_TEXTS
from flaxlm.errors import FlaxlmError

TOLERANCE = 1e-4


def parity_batch(hf_tok, max_len: int) -> dict[str, np.ndarray]:
    """SAMPLE_TEXTS (the shortest with a mask token) padded to the longest, at most `max_len`."""
    texts = list(SAMPLE_TEXTS)
    texts.append(f"Il gatto dorme sul {hf_tok.mask_token}.")
    enc = hf_tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="np")
    ids = enc["input_ids"].astype(np.int32)
    mask = enc["attention_mask"].astype(np.int32)
    if mask.all():
        raise FlaxlmError("parity batch has no padding; the check would miss masking bugs")
    types = enc.get("token_type_ids")
    types = np.zeros_like(ids) if types is None else types.astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@functools.lru_cache(maxsize=8)
def _forward(graphdef):
    """One jit-compiled forward per model structure (op-by-op dispatch would compile every
    primitive separately; import and export of one model share the compilation)."""

    @jax.jit
    def forward(state, ids_BxL, mask_BxL, types_BxL):
        m = nnx.merge(graphdef, state)
        hidden_BxLxD = m.encoder(ids_BxL, mask_BxL, types_BxL)
        # = m.all_position_logits(...), without running the encoder a second time.
        return hidden_BxLxD, m.mlm_head(hidden_BxLxD, m.encoder.embeddings.word)

    return forward


def flax_outputs(model, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(hidden_BxLxD, logits_BxLxV) of a flaxlm MaskedLMModel, deterministic, fp32."""
    graphdef, state = nnx.split(model)
    hidden, logits = _forward(graphdef)(state, batch["input_ids"], batch["attention_mask"],
                                        batch["token_type_ids"])
    return np.asarray(hidden, np.float32), np.asarray(logits, np.float32)


def torch_outputs(torch_model, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """(last hidden state, MLM logits or None for a base model) of a transformers model."""
    import torch

    torch_model.eval()
    with torch.no_grad():
        out = torch_model(input_ids=torch.from_numpy(batch["input_ids"].astype(np.int64)),
                          attention_mask=torch.from_numpy(batch["attention_mask"].astype(np.int64)),
                          token_type_ids=torch.from_numpy(batch["token_type_ids"].astype(np.int64)),
                          output_hidden_states=True)
    hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
    logits = getattr(out, "logits", None)
    return hidden.float().numpy(), None if logits is None else logits.float().numpy()


def max_abs_diff(a: np.ndarray, b: np.ndarray, what: str) -> float:
    if a.shape != b.shape:
        raise FlaxlmError(f"parity: {what} shapes differ: flaxlm {a.shape} vs torch {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise FlaxlmError(f"parity: non-finite {what}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def check_parity(flax_model, torch_model, batch: dict[str, np.ndarray], *, where: str,
                 tolerance: float = TOLERANCE) -> dict[str, float]:
    """Max |Δ| of hidden states and (when the torch model has a head) logits; raises if > tol."""
    f_hidden, f_logits = flax_outputs(flax_model, batch)
    t_hidden, t_logits = torch_outputs(torch_model, batch)
    result = {"hidden_max_abs_diff": max_abs_diff(f_hidden, t_hidden, "hidden states")}
    if t_logits is not None:
        result["logits_max_abs_diff"] = max_abs_diff(f_logits, t_logits, "logits")
    result["batch_shape"] = list(batch["input_ids"].shape)
    result["padding_tokens"] = int((batch["attention_mask"] == 0).sum())
    worst = max(v for k, v in result.items() if k.endswith("diff"))
    if worst > tolerance:
        detail = ", ".join(f"{k}={v:.3g}" for k, v in result.items() if k.endswith("diff"))
        raise FlaxlmError(f"{where}: parity with PyTorch transformers failed: {detail} > "
                          f"{tolerance:g} on a {batch['input_ids'].shape} batch")
    return result

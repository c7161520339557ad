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
        # The head on the same hidden states (the encoder runs once).
        out = {"hidden": hidden_BxLxD, "logits": m.head_logits(hidden_BxLxD)}
        if m.encoder.pooler is not None:
            out["pooled"] = m.encoder.pooler(hidden_BxLxD)
        return out

    return forward


def flax_outputs(model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{"hidden": BxLxD, "logits": the head's own output (MLM BxLxV at every position, token
    BxLxC, sequence BxC), "pooled": BxD when the encoder has a pooler} — deterministic, fp32."""
    graphdef, state = nnx.split(model)
    out = _forward(graphdef)(state, batch["input_ids"], batch["attention_mask"],
                             batch["token_type_ids"])
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def torch_outputs(torch_model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same keys from a transformers model: "hidden" always, "logits" from a task class,
    "pooled" from a base model with a pooler."""
    import torch  # seconds to import: only when comparing with transformers

    torch_model.eval()
    with torch.no_grad():
        types = {"token_type_ids": torch.from_numpy(batch["token_type_ids"].astype(np.int64))}
        if getattr(torch_model.config, "model_type", None) == "distilbert":
            types = {}  # DistilBERT has no token types (and its forward takes none)
        out = torch_model(input_ids=torch.from_numpy(batch["input_ids"].astype(np.int64)),
                          attention_mask=torch.from_numpy(batch["attention_mask"].astype(np.int64)),
                          output_hidden_states=True, **types)
    hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else out.last_hidden_state
    result = {"hidden": hidden.float().numpy()}
    for key, attr in (("logits", "logits"), ("pooled", "pooler_output")):
        if getattr(out, attr, None) is not None:
            result[key] = getattr(out, attr).float().numpy()
    return result


def max_abs_diff(a: np.ndarray, b: np.ndarray, what: str) -> float:
    if a.shape != b.shape:
        raise FlaxlmError(f"parity: {what} shapes differ: flaxlm {a.shape} vs torch {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise FlaxlmError(f"parity: non-finite {what}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def check_parity(flax_model, torch_model, batch: dict[str, np.ndarray], *, where: str,
                 tolerance: float = TOLERANCE) -> dict[str, float]:
    """Max |Δ| of the hidden states and of every output both models give (the head's logits;
    the pooled output of a base model with a pooler); raises if any is > tolerance."""
    flax_out = flax_outputs(flax_model, batch)
    torch_out = torch_outputs(torch_model, batch)
    diffs = {
        f"{key}_max_abs_diff": max_abs_diff(flax_out[key], torch_out[key], key)
        for key in ("hidden", "logits", "pooled") if key in flax_out and key in torch_out
    }
    return parity_record(diffs, batch, where=where, tolerance=tolerance)


def parity_record(diffs: dict[str, float], batch: dict[str, np.ndarray], *, where: str,
                  tolerance: float) -> dict:
    """`diffs` (`*_max_abs_diff`) with the batch's shape and padding count, as export and import
    report them; raises if any difference is > tolerance."""
    result = {
        **diffs, "batch_shape": list(batch["input_ids"].shape),
        "padding_tokens": int((batch["attention_mask"] == 0).sum())
    }
    if max(diffs.values()) > tolerance:
        detail = ", ".join(f"{k}={v:.3g}" for k, v in diffs.items())
        raise FlaxlmError(f"{where}: parity with PyTorch transformers failed: {detail} > "
                          f"{tolerance:g} on a {batch['input_ids'].shape} batch")
    return result

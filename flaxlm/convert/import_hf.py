"""`flaxlm import`: an HF PyTorch checkpoint directory → a flaxlm workdir (params at step 0).

The workdir is what `flaxlm train` writes, minus optimizer state: `config.json`, `tokenizer/` and
`checkpoints/0/{params,meta}`, so `flaxlm export --workdir` and `--config.init_from=` take it.
Everything from the HF directory is read as data (see `safe_load.py`), and the imported model is
checked against PyTorch transformers on real text before the workdir appears at `--out`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os

import numpy as np

from flaxlm.checkpoint import write_params
from flaxlm.convert.export import check_out, staged_dir
from flaxlm.convert.hf_config import model_config_from_hf
from flaxlm.convert.mappings import Table, from_hf
from flaxlm.convert.model_io import (abstract_params, build_model, fresh_head, param_count,
                                     param_shapes, unflatten_like)
from flaxlm.convert.parity import TOLERANCE, check_parity, parity_batch
from flaxlm.convert.safe_load import check_hf_dir, load_tensors
from flaxlm.convert.tokenizer_files import import_tokenizer
from flaxlm.errors import FlaxlmError

log = logging.getLogger("flaxlm.convert")
PARITY_MAX_LEN = 64


def _torch_reference(table: Table, raw_config: dict, is_mlm: bool,
                     tensors: dict[str, np.ndarray]):
    """The checkpoint in its transformers class, configured from its own (validated) config.json
    so that a mistranslated field shows up as a parity failure, and loaded from the tensors
    already read safely (transformers never opens the untrusted directory's weights)."""
    import torch
    import transformers

    try:  # skip random init: every weight that matters is loaded right after
        from transformers.initialization import no_init_weights
    except ImportError:
        no_init_weights = contextlib.nullcontext
    cls = getattr(transformers, table.mlm_class if is_mlm else table.base_class)
    # Loading choices (dtype, attention kernel) are ours: fp32, the default attention.
    hf_config = getattr(transformers, table.config_class).from_dict(
        {k: v for k, v in raw_config.items()
         if k not in ("dtype", "torch_dtype", "attn_implementation") and not k.startswith("_")})
    with no_init_weights():
        model = cls(hf_config)
    p = table.base_prefix
    state = {(k[len(p):] if not is_mlm and k.startswith(p) else k): torch.from_numpy(np.array(v))
             for k, v in tensors.items()}
    model.load_state_dict(state, strict=False)
    if is_mlm:
        model.tie_weights()
    return model.float().eval()


def import_hf(hf_dir: str, out: str, *, overwrite: bool = False, tolerance: float = TOLERANCE,
              tokenizer_dir: str | None = None) -> dict:
    """Converts `hf_dir` into a flaxlm workdir at `out`; returns a summary. The tokenizer comes
    from `tokenizer_dir` when given (mMiniLMv2 ships none and uses XLM-R's), else from `hf_dir`."""
    check_out(out, overwrite)
    raw_config = check_hf_dir(hf_dir)
    config, table, is_mlm = model_config_from_hf(raw_config, os.path.join(hf_dir, "config.json"))
    tensors = load_tensors(hf_dir)
    try:
        flat, absent, dropped = from_hf(table, tensors, config, param_shapes(config),
                                        allow_missing_head=not is_mlm)
    except FlaxlmError as e:
        raise FlaxlmError(f"{hf_dir}: {e}") from None
    weights_dropped = [d for d in dropped if not d.endswith(("position_ids", "token_type_ids"))]
    if weights_dropped:
        log.warning("flaxlm import: dropping %s (no flaxlm counterpart)", ", ".join(weights_dropped))
    if absent:
        log.warning("flaxlm import: %s has no MLM head (%s); initialized %s fresh "
                    "(truncated normal 0.02, LayerNorm 1/0, bias 0)", hf_dir, table.base_class,
                    ", ".join(absent))
        flat.update(fresh_head(config))
    _, abstract = abstract_params(config)
    params = unflatten_like(abstract, flat)

    with staged_dir(out, overwrite=overwrite) as tmp:
        tok, hf_tok = import_tokenizer(tokenizer_dir or hf_dir, os.path.join(tmp, "tokenizer"),
                                       config.arch, config.vocab_size, config.max_seq_len)
        if config.arch == "xlmr" and tok.pad_id != config.pad_token_id:
            raise FlaxlmError(f"{hf_dir}: pad_token_id={config.pad_token_id} in config.json but "
                              f"the tokenizer of {tokenizer_dir or hf_dir} pads with {tok.pad_id}")
        batch = parity_batch(hf_tok, min(PARITY_MAX_LEN, config.max_seq_len))
        parity = check_parity(build_model(config, params),
                              _torch_reference(table, raw_config, is_mlm, tensors), batch,
                              where=f"import of {hf_dir}", tolerance=tolerance)
        source = {"source": "hf-import", "hf_dir": os.path.abspath(hf_dir),
                  "tokenizer_from": os.path.abspath(tokenizer_dir or hf_dir),
                  "hf_class": (raw_config.get("architectures") or [table.base_class])[0],
                  "initialized_fresh": absent, "dropped": dropped}
        model = dataclasses.asdict(config)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"config": source, "model": model, "objective": "mlm",
                       "tokenizer": "tokenizer"}, f, indent=2, sort_keys=True)
        write_params(tmp, 0, params, {"step": 0, "data_position": 0, "model": model,
                                      "objective": "mlm", "tokenizer": "tokenizer", **source})
    return {"out": os.path.abspath(out), "arch": config.arch, "params": param_count(params),
            "initialized_fresh": absent, "dropped": dropped, **parity}

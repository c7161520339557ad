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

from flaxlm import storage
from flaxlm.run.checkpoint import write_weights_only
from flaxlm.run.workdir import Workdir
from flaxlm.convert.export import check_out, staged_dir
from flaxlm.convert.hf_config import model_config_from_hf
from flaxlm.convert.mappings.tables import Table
from flaxlm.convert.mappings.tensors import from_hf, has_pooler
from flaxlm.convert.model_io import (abstract_params, build_model, fresh_head, param_count,
                                     param_shapes)
from flaxlm.convert.parity import TOLERANCE, check_parity, parity_batch
from flaxlm.convert.safe_load import check_hf_dir, load_tensors
from flaxlm.convert.tokenizer_files import import_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.models.param_tree import unflatten_like

log = logging.getLogger("flaxlm.convert")
PARITY_MAX_LEN = 64
# ElectraForPreTraining's replaced-token head: no use to fine-tuning, dropped from a
# discriminator imported alone.
_DISCRIMINATOR_HEAD = "discriminator_predictions."


def _torch_reference(table: Table, hf_config, is_base: bool, tensors: dict[str, np.ndarray]):
    """The checkpoint in its transformers class, configured from its own (validated) config.json
    so that a mistranslated field shows up as a parity failure, and loaded from the tensors
    already read safely (transformers never opens the untrusted directory's weights)."""
    import torch  # torch and transformers take seconds to import: only when importing
    import transformers

    try:  # skip random init: every weight that matters is loaded right after
        from transformers.initialization import no_init_weights
    except ImportError:
        no_init_weights = contextlib.nullcontext
    cls = getattr(transformers, table.family.base_class if is_base else table.hf_class)
    with no_init_weights():
        model = cls(hf_config)
    p = table.family.prefix
    state = {
        (k[len(p):] if is_base and k.startswith(p) else k): torch.from_numpy(np.array(v))
        for k, v in tensors.items()
    }
    model.load_state_dict(state, strict=False)
    if table.aliases and not is_base:
        model.tie_weights()
    return model.float().eval()


def import_model(hf_dir: str, out: str, *, overwrite: bool = False, tolerance: float = TOLERANCE,
                 tokenizer_dir: str | None = None) -> dict:
    """Converts one local transformers model `hf_dir` into a flaxlm workdir at a local `out`;
    returns a summary. The tokenizer comes from `tokenizer_dir` when given (mMiniLMv2 ships none
    and uses XLM-R's), else from `hf_dir`. `flaxlm.convert.commands.import_hf` picks this or the
    ELECTRA pair's import; an `ElectraForPreTraining` that reaches this is a discriminator alone."""
    check_out(out, overwrite)
    raw_config = check_hf_dir(hf_dir)
    hf_class = (raw_config.get("architectures") or [None])[0]
    discriminator_alone = hf_class == "ElectraForPreTraining"
    if discriminator_alone:
        # What users download to fine-tune (a released discriminator): its encoder, read as
        # transformers' ElectraModel; ELECTRA pre-training needs the generator too.
        log.warning(
            "flaxlm import: %s is an ELECTRA discriminator without its generator: "
            "imported for fine-tuning as its encoder (ElectraModel), without the "
            "replaced-token head; to continue ELECTRA pre-training import the pair with "
            "--generator DIR", hf_dir)
        raw_config = {**raw_config, "architectures": ["ElectraModel"]}
    hf = model_config_from_hf(raw_config, os.path.join(hf_dir, "config.json"))
    table, task = hf.table, hf.table.task
    tensors = load_tensors(hf_dir)
    rtd_head = sorted(k for k in tensors
                      if discriminator_alone and k.startswith(_DISCRIMINATOR_HEAD))
    tensors = {k: v for k, v in tensors.items() if k not in rtd_head}
    # The pooler is kept when the checkpoint has one (BertModel, XLMRobertaModel, BERT sequence
    # classifiers), so every stored tensor round-trips.
    config = dataclasses.replace(
        hf.model, pooler=table.head.holds_pooler or has_pooler(table.family, tensors))
    try:
        flat, absent, dropped = from_hf(table, tensors, config, param_shapes(config, task),
                                        allow_missing_head=hf.is_base)
    except FlaxlmError as e:
        raise FlaxlmError(f"{hf_dir}: {e}") from None
    dropped = rtd_head + dropped
    weights_dropped = [d for d in dropped if not d.endswith(("position_ids", "token_type_ids"))]
    if weights_dropped:
        log.warning("flaxlm import: dropping %s (no flaxlm counterpart)",
                    ", ".join(weights_dropped))
    if absent:
        log.warning(
            "flaxlm import: %s has no MLM head (%s); initialized %s fresh "
            "(truncated normal 0.02, LayerNorm 1/0, bias 0)", hf_dir, table.family.base_class,
            ", ".join(absent))
        flat.update(fresh_head(config))
    _, abstract = abstract_params(config, task)
    params = unflatten_like(abstract, flat)

    with staged_dir(out, overwrite=overwrite) as tmp:
        tok, hf_tok = import_tokenizer(tokenizer_dir or hf_dir,
                                       Workdir(tmp).own_tokenizer_dir, config.arch,
                                       config.vocab_size, config.max_seq_len)
        if config.arch == "xlmr" and tok.pad_id != config.pad_token_id:
            raise FlaxlmError(f"{hf_dir}: pad_token_id={config.pad_token_id} in config.json but "
                              f"the tokenizer of {tokenizer_dir or hf_dir} pads with {tok.pad_id}")
        batch = parity_batch(hf_tok, min(PARITY_MAX_LEN, config.max_seq_len))
        parity = check_parity(build_model(config, params, task),
                              _torch_reference(table, hf.hf, hf.is_base, tensors), batch,
                              where=f"import of {hf_dir}", tolerance=tolerance)
        source = {
            "source": "hf-import",
            "hf_dir": storage.recorded_name(hf_dir),
            "tokenizer_from": storage.recorded_name(tokenizer_dir or hf_dir),
            "hf_class": hf_class or table.family.base_class,
            "initialized_fresh": absent,
            "dropped": dropped
        }
        model = dataclasses.asdict(config)
        # The objective that trains this head (MLM pre-training, or fine-tuning the classifier).
        run = {"model": model, "head": task, "objective": task}
        if task != "mlm":
            run["labels"] = hf.labels
        write_weights_only(tmp, params, run, source)
    return {
        "out": os.path.abspath(out),
        "arch": config.arch,
        "head": task,
        "params": param_count(params),
        "initialized_fresh": absent,
        "dropped": dropped,
        "unused_rows": config.vocab_size - tok.vocab_size,
        **parity
    }

"""A pre-trained MLM workdir as `flaxlm train` leaves it (params-only checkpoint), random weights."""

import dataclasses
import json
import os
import shutil

import numpy as np

from flaxlm.convert.model_io import abstract_params
from flaxlm.models.param_tree import flat_names, unflatten_like
from flaxlm.run.checkpoint import write_params


def write_mlm_workdir(path, tokenizer, config, *, std: float, step: int) -> dict:
    """Writes `config`'s MLM model with N(0, std) weights (LayerNorm scales around 1) and a copy of
    `tokenizer` into a new `path`; returns the weights by flat name."""
    os.makedirs(path)
    shutil.copytree(tokenizer.path, os.path.join(path, "tokenizer"))
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "config": {},
                "model": dataclasses.asdict(config),
                "objective": "mlm",
                "head": "mlm",
                "tokenizer": "tokenizer"
            }, f)
    _, abstract = abstract_params(config, "mlm")
    rng = np.random.default_rng(0)
    flat = {
        name: (rng.normal(0, std, a.shape) + name.endswith("norm/scale")).astype(np.float32)
        for name, a in flat_names(abstract).items()
    }
    write_params(path, step, unflatten_like(abstract, flat), {"step": step})
    return flat

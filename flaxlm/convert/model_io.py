"""The flaxlm side of conversion: flat parameter names, and building the Flax model for a
head (`flaxlm.models.heads.MODELS`: "mlm", "token_classification", "sequence_classification")."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from flax import nnx

from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import model_class
from flaxlm.models.param_tree import flat_names


@functools.lru_cache(maxsize=8)
def abstract_params(config: ModelConfig, head: str = "mlm") -> tuple[nnx.GraphDef, Any]:
    """(graphdef, pure dict of ShapeDtypeStruct) of the model with this head, without allocating
    weights. Cached (tracing the model costs ~0.4 s); callers must not mutate the result."""
    cls = model_class(head)
    model = nnx.eval_shape(lambda: cls(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model, nnx.Param)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                            nnx.to_pure_dict(state))
    return graphdef, abstract


def param_shapes(config: ModelConfig, head: str = "mlm") -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in flat_names(abstract_params(config, head)[1]).items()}


def build_model(config: ModelConfig, params: Any, head: str = "mlm") -> nnx.Module:
    graphdef, _ = abstract_params(config, head)
    return nnx.merge(graphdef, jax.tree.map(np.asarray, params))


def fresh_head(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A newly initialized MLM head, as flat `mlm_head/...` names, drawn from the distribution of
    flaxlm's own init (`layers.py`: a normal of stddev 0.02 cut at ±2 stddev; LayerNorm 1/0; zero
    biases) but in numpy: no compilation."""
    rng = np.random.default_rng(seed)
    d, e = config.hidden_size, config.embedding_dim
    kernel = rng.standard_normal((d, e))
    while (outside := np.abs(kernel) > 2.0).any():
        kernel[outside] = rng.standard_normal(int(outside.sum()))
    # Like jax's and BERT-TF's truncated normals, 0.02 is the stddev before the cut (0.0176 after).
    kernel *= 0.02
    return {
        "mlm_head/transform/kernel": kernel.astype(np.float32),
        "mlm_head/transform/bias": np.zeros((e, ), np.float32),
        "mlm_head/norm/scale": np.ones((e, ), np.float32),
        "mlm_head/norm/bias": np.zeros((e, ), np.float32),
        "mlm_head/bias": np.zeros((config.vocab_size, ), np.float32)
    }


def param_count(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))

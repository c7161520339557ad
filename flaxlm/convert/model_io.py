"""The flaxlm side of conversion: workdirs, flat parameter names, and building the Flax model for
a head (`flaxlm.models.heads.MODELS`: "mlm", "token_classification", "sequence_classification")."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from flaxlm import storage
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import MODELS, model_class


def _name(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def flatten(tree: Any) -> dict[str, Any]:
    """`{"encoder/layers/0/attention/query/kernel": leaf, ...}` — the names `param_names` gives."""
    return {_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten_like(template: Any, flat: dict[str, Any]) -> Any:
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    return jax.tree_util.tree_unflatten(treedef, [flat[_name(p)] for p, _ in paths])


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
    return {k: tuple(v.shape) for k, v in flatten(abstract_params(config, head)[1]).items()}


def build_model(config: ModelConfig, params: Any, head: str = "mlm") -> nnx.Module:
    graphdef, _ = abstract_params(config, head)
    return nnx.merge(graphdef, jax.tree.map(np.asarray, params))


def fresh_head(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A newly initialized MLM head, as flat `mlm_head/...` names, drawn like flaxlm's own init
    (truncated normal, stddev 0.02; LayerNorm 1/0; zero biases) but in numpy: no compilation."""
    rng = np.random.default_rng(seed)
    d, e = config.hidden_size, config.embedding_dim
    kernel = rng.standard_normal((d, e))
    while (outside := np.abs(kernel) > 2.0).any():
        kernel[outside] = rng.standard_normal(int(outside.sum()))
    # jax's truncated_normal rescales so that the truncated distribution has the given stddev.
    kernel *= 0.02 / 0.87962566103423978
    return {"mlm_head/transform/kernel": kernel.astype(np.float32),
            "mlm_head/transform/bias": np.zeros((e,), np.float32),
            "mlm_head/norm/scale": np.ones((e,), np.float32),
            "mlm_head/norm/bias": np.zeros((e,), np.float32),
            "mlm_head/bias": np.zeros((config.vocab_size,), np.float32)}


def param_count(params: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


# The head of an ELECTRA pre-training workdir (generator + discriminator; `flaxlm.convert.electra`
# converts it, `flaxlm.models.electra` builds it): not a `MODELS` entry.
ELECTRA_HEAD = "electra"


@dataclasses.dataclass(frozen=True)
class Workdir:
    path: str
    run: dict  # config.json as written by train.py / import
    model: ModelConfig
    tokenizer_dir: str
    head: str  # a key of flaxlm.models.heads.MODELS, or ELECTRA_HEAD


def workdir_head(run: dict, path: str) -> str:
    """The head a workdir's checkpoints carry: config.json's "head", else implied by an MLM
    objective (workdirs written before heads were named)."""
    head = run.get("head") or ("mlm" if run.get("objective", "mlm") == "mlm" else None)
    if head == ELECTRA_HEAD:
        return head
    if head not in MODELS:
        raise FlaxlmError(f"{path}: head {head!r} is not one of {', '.join(MODELS)} (objective "
                          f"{run.get('objective')!r}); set \"head\" in config.json")
    return head


def refuse_electra_pair(wd: Workdir, needs: str, instead: str) -> None:
    """Uses that need one model stop here, before any weight is read, on an ELECTRA pair."""
    if wd.head == ELECTRA_HEAD:
        raise FlaxlmError(f"{wd.path}: an ELECTRA pre-training run (generator + discriminator, "
                          f"head \"{ELECTRA_HEAD}\"); {needs}: {instead}")


def open_workdir(workdir: str) -> Workdir:
    path = os.path.join(workdir, "config.json")
    if not storage.isfile(path):
        raise FlaxlmError(f"{workdir}: no config.json (is it a flaxlm workdir?)")
    try:
        run = json.loads(storage.read_text(path))
        fields = {f.name for f in dataclasses.fields(ModelConfig)}
        model_dict = run["model"]
        unknown = sorted(set(model_dict) - fields)
        if unknown:
            raise FlaxlmError(f"{path}: unknown model field(s) {unknown}")
        model = ModelConfig(**model_dict)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise FlaxlmError(f"{path}: not a flaxlm run config ({e!r})") from None
    model.validate()
    head = workdir_head(run, path)
    if head == ELECTRA_HEAD:
        # An ELECTRA run's model is its discriminator, whatever arch its preset names ("bert"
        # for the SELECTRA presets): what is fine-tuned from it is an ELECTRA encoder, with
        # ELECTRA's sequence head, exported as transformers' Electra* classes.
        model = dataclasses.replace(model, arch="electra")
    tokenizer = run.get("tokenizer") or "tokenizer"
    tokenizer_dir = tokenizer if os.path.isabs(tokenizer) or storage.is_remote(tokenizer) else \
        os.path.join(workdir, tokenizer)
    return Workdir(workdir, run, model, tokenizer_dir, head)

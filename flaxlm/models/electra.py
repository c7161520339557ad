"""ELECTRA's two towers: a small generator and the discriminator, over one shared embedding module.

The word, position and token-type embeddings and their LayerNorm (`embeddings`) are owned by the
pre-training model and passed into each tower at call time, so both losses train the same table
(ELECTRA's tied generator/discriminator embeddings). Each tower projects the E-wide embeddings to
its own hidden width when they differ (`embeddings_project`, as in transformers' ELECTRA). The
generator's MLM head is tied to the shared word embeddings; the discriminator's head scores every
position as original or replaced.

Parameter names (what conversion tables map; `param_names(model)` lists them):
  embeddings/{word,position,token_type}/embedding, embeddings/norm/{scale,bias}
  generator/embeddings_project/{kernel,bias}          (E ≠ generator hidden only)
  generator/layers/{i}/...                            (the encoder's layer names)
  generator_head/{transform/{kernel,bias}, norm/{scale,bias}, bias}
  discriminator/embeddings_project/{kernel,bias}      (E ≠ discriminator hidden only)
  discriminator/layers/{i}/...
  discriminator_head/{dense,prediction}/{kernel,bias}

Shapes: B batch, L length, M prediction slots, E embedding width, D a tower's hidden width,
V vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.encoder import Embeddings, Layer
from flaxlm.models.heads import MaskedLMHead, gather_positions
from flaxlm.models.layers import DenseGeneral, gelu
from flaxlm.sharding import constrain

_ACT = ("batch", "length", "act_embed")


def generator_config(discriminator: ModelConfig, hidden_fraction: float = 0.25,
                     layer_fraction: float = 1.0) -> ModelConfig:
    """The generator's shapes, derived from the discriminator's as ELECTRA does.

    google-research/electra `run_pretraining.get_generator_config`: hidden =
    round(discriminator hidden × `generator_hidden_size` (0.25 in `configure_pretraining.py`)),
    layers = round(discriminator layers × `generator_layers` (1.0)), FFN = 4 × hidden, heads =
    max(1, hidden // 64). The embeddings stay the discriminator's width (they are shared).
    """
    hidden = int(round(discriminator.hidden_size * hidden_fraction))
    layers = int(round(discriminator.num_layers * layer_fraction))
    if hidden < 1 or layers < 1:
        raise FlaxlmError(
            f"objective.electra: generator_hidden_fraction={hidden_fraction} and "
            f"generator_layer_fraction={layer_fraction} give a generator of hidden {hidden} × "
            f"{layers} layers from a {discriminator.hidden_size} × {discriminator.num_layers} "
            "discriminator; both must be at least 1")
    config = dataclasses.replace(discriminator, hidden_size=hidden, num_layers=layers,
                                 intermediate_size=4 * hidden, num_heads=max(1, hidden // 64),
                                 head_dim=0, embedding_size=discriminator.embedding_dim,
                                 pooler=False)
    config.validate()
    return config


class Tower(nnx.Module):
    """An encoder body without embeddings: (projection E→D) + post-LN layers."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        e, d = config.embedding_dim, config.hidden_size
        self.embeddings_project = (DenseGeneral((e, ), (d, ), ("embed", ),
                                                ("act_embed", ), rngs=rngs) if e != d else None)
        self.layers = nnx.List([Layer(config, rngs=rngs) for _ in range(config.num_layers)])

    def __call__(self, x_BxLxE, attention_mask_BxL, dropout_key) -> jax.Array:
        x_BxLxD = x_BxLxE if self.embeddings_project is None else self.embeddings_project(x_BxLxE)
        x_BxLxD = constrain(x_BxLxD, _ACT)
        # Additive mask in fp32, as `Encoder` builds it.
        bias_Bx1x1xL = jnp.where(attention_mask_BxL[:, None, None, :] > 0, 0.0,
                                 jnp.finfo(jnp.float32).min).astype(jnp.float32)
        for i, layer in enumerate(self.layers):
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
            x_BxLxD = layer(x_BxLxD, bias_Bx1x1xL, key)
        return x_BxLxD


class DiscriminatorHead(nnx.Module):
    """dense D→D → GELU → dense D→1: one replaced-token logit per position
    (`ElectraDiscriminatorPredictions`)."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.dense = DenseGeneral((d, ), (d, ), ("embed", ), ("act_embed", ), rngs=rngs)
        self.prediction = DenseGeneral((d, ), (1, ), ("embed", ), ("labels", ), rngs=rngs)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        return self.prediction(gelu(self.dense(x_BxLxD)))[..., 0].astype(jnp.float32)


def _keys(key: jax.Array | None, n: int) -> tuple:
    return (None, ) * n if key is None else tuple(jax.random.split(key, n))


class ElectraPreTrainingModel(nnx.Module):
    """Shared embeddings + generator (with its tied MLM head) + discriminator (with its RTD head).

    `config` is the discriminator's; `generator` defaults to ELECTRA's quarter-width generator.
    """
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs,
                 generator: ModelConfig | None = None):
        generator = generator or generator_config(config)
        if generator.embedding_dim != config.embedding_dim:
            raise FlaxlmError(f"ELECTRA's towers share embeddings: generator embedding width "
                              f"{generator.embedding_dim} ≠ discriminator {config.embedding_dim}")
        self.config, self.generator_config = config, generator
        self.embeddings = Embeddings(config, rngs=rngs)
        self.generator = Tower(generator, rngs=rngs)
        self.generator_head = MaskedLMHead(generator, rngs=rngs)
        self.discriminator = Tower(config, rngs=rngs)
        self.discriminator_head = DiscriminatorHead(config, rngs=rngs)

    def generator_logits(self, batch: Mapping[str, jax.Array], *, dtype=jnp.float32,
                         dropout_key: jax.Array | None = None) -> jax.Array:
        """`logits_BxMxV` (fp32) of the generator at `batch["masked_positions"]` of the masked
        `batch["input_ids"]`."""
        embed_key, tower_key = _keys(dropout_key, 2)
        x_BxLxE = self.embeddings(batch["input_ids"], batch.get("token_type_ids"), dtype, embed_key)
        x_BxLxD = self.generator(x_BxLxE, batch["attention_mask"], tower_key)
        h_BxMxD = gather_positions(x_BxLxD, batch["masked_positions"])
        return self.generator_head(h_BxMxD, self.embeddings.word)

    def discriminator_logits(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *,
                             dtype=jnp.float32, dropout_key: jax.Array | None = None) -> jax.Array:
        """`logits_BxL` (fp32): > 0 means "replaced"."""
        embed_key, tower_key = _keys(dropout_key, 2)
        x_BxLxE = self.embeddings(input_ids_BxL, token_type_ids_BxL, dtype, embed_key)
        x_BxLxD = self.discriminator(x_BxLxE, attention_mask_BxL, tower_key)
        return self.discriminator_head(x_BxLxD)


def discriminator_as_encoder(flat_params: dict[str, Any]) -> dict[str, Any]:
    """An ELECTRA pre-training run's weights, plus the discriminator seen as an `Encoder` (the
    shared embeddings and the discriminator's projection and layers under `encoder/`), so that
    fine-tuning's `InitRule("encoder")` loads the discriminator, as ELECTRA fine-tunes it. Other
    runs' weights are returned unchanged."""
    if not any(n.startswith("discriminator/layers/") for n in flat_params):
        return flat_params
    view = dict(flat_params)
    for name, value in flat_params.items():
        if name.startswith("embeddings/"):
            view[f"encoder/{name}"] = value
        elif name.startswith(("discriminator/layers/", "discriminator/embeddings_project/")):
            view["encoder/" + name[len("discriminator/"):]] = value
    return view

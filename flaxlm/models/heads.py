"""Task heads on top of the encoder. The MLM head is tied to the input embeddings."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from flaxlm.models.config import ModelConfig
from flaxlm.models.encoder import Encoder
from flaxlm.models.layers import DenseGeneral, LayerNorm, gelu, param
from flaxlm.sharding import constrain


def gather_positions(x_BxLxD: jax.Array, positions_BxM: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x_BxLxD, positions_BxM[..., None], axis=1)


class MaskedLMHead(nnx.Module):
    """dense → GELU → LayerNorm → tied projection onto the word embeddings + bias."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.transform = DenseGeneral((d,), (d,), ("embed",), ("act_embed",), rngs=rngs)
        self.norm = LayerNorm(d, config.layer_norm_eps)
        self.bias = param(jnp.zeros((config.vocab_size,), jnp.float32), ("vocab",))

    def __call__(self, h_BxMxD: jax.Array, word_embeddings) -> jax.Array:
        h_BxMxD = self.norm(gelu(self.transform(h_BxMxD)))
        logits_BxMxV = word_embeddings.attend(h_BxMxD) + self.bias[...].astype(h_BxMxD.dtype)
        return constrain(logits_BxMxV, ("batch", "predictions", "vocab"))


class MaskedLMModel(nnx.Module):
    """Encoder + MLM head; vocabulary logits are computed only at the masked positions.

    Projecting every position onto a 250k vocabulary would cost several times the whole MiniLM
    body, so the hidden states are gathered at `masked_positions` first.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoder = Encoder(config, rngs=rngs)
        self.mlm_head = MaskedLMHead(config, rngs=rngs)

    def __call__(self, batch: Mapping[str, jax.Array], *, dtype=jnp.float32,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        x_BxLxD = self.encoder(batch["input_ids"], batch["attention_mask"],
                               batch["token_type_ids"], dtype=dtype, dropout_key=dropout_key)
        h_BxMxD = gather_positions(x_BxLxD, batch["masked_positions"])
        return self.mlm_head(h_BxMxD, self.encoder.embeddings.word).astype(jnp.float32)

    def all_position_logits(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL):
        """Logits at every position, for fill-mask and parity checks (not for training)."""
        x_BxLxD = self.encoder(input_ids_BxL, attention_mask_BxL, token_type_ids_BxL)
        return self.mlm_head(x_BxLxD, self.encoder.embeddings.word)


def param_names(model: nnx.Module) -> list[str]:
    """Canonical `/`-joined parameter names, the keys that conversion tables map."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return ["/".join(str(p) for p in path) for path, _ in flat]


def logical_axes(state: nnx.State):
    """A tree matching `state` whose leaves are the logical axis tuples of each parameter."""
    return jax.tree.map(lambda v: v.get_metadata()["logical_axes"], state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))

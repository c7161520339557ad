"""The BERT / XLM-R / MiniLM encoder body: embeddings and post-LN transformer layers.

Shapes: B batch, L sequence length, E embedding width, D hidden, H heads, K head dim,
F intermediate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxlm.models.attention import self_attention
from flaxlm.models.config import ModelConfig
from flaxlm.models.layers import DenseGeneral, Embed, LayerNorm, dropout, gelu
from flaxlm.sharding import constrain

_ACT = ("batch", "length", "act_embed")
# What a rematerialized layer keeps for the backward pass (ModelConfig.remat); "full": nothing
# but its inputs.
_REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable
}


def _run_layer(layer, x_BxLxD, bias_Bx1x1xL, dropout_key):
    return layer(x_BxLxD, bias_Bx1x1xL, dropout_key)


def _key(key: jax.Array | None, *path: int) -> jax.Array | None:
    """A distinct dropout key per layer and site, derived without carrying RNG state."""
    if key is None:
        return None
    for p in path:
        key = jax.random.fold_in(key, p)
    return key


def position_ids(config: ModelConfig, input_ids_BxL: jax.Array) -> jax.Array:
    if config.arch == "xlmr":
        # XLM-R counts real tokens from pad_token_id + 1; padding keeps position pad_token_id.
        real_BxL = (input_ids_BxL != config.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(real_BxL, axis=1) * real_BxL + config.pad_token_id
    length = input_ids_BxL.shape[1]
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), input_ids_BxL.shape)


class Embeddings(nnx.Module):
    """Word + position (+ token type) embeddings of width E, then LayerNorm and dropout."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        e = config.embedding_dim
        self.word = Embed(config.vocab_size, e, ("vocab", "embed"), rngs=rngs)
        self.position = Embed(config.max_position_embeddings, e, ("positions", "embed"), rngs=rngs)
        self.token_type = (Embed(config.type_vocab_size, e,
                                 ("types", "embed"), rngs=rngs) if config.type_vocab_size else None)
        self.norm = LayerNorm(e, config.layer_norm_eps)

    def __call__(self, input_ids_BxL, token_type_ids_BxL, dtype, dropout_key):
        x_BxLxE = (self.word(input_ids_BxL, dtype) +
                   self.position(position_ids(self.config, input_ids_BxL), dtype))
        if self.token_type is not None:
            if token_type_ids_BxL is None:  # as transformers: every token in segment 0
                token_type_ids_BxL = jnp.zeros_like(input_ids_BxL)
            x_BxLxE = x_BxLxE + self.token_type(token_type_ids_BxL, dtype)
        x_BxLxE = self.norm(x_BxLxE)
        return dropout(x_BxLxE, self.config.hidden_dropout, dropout_key)


class SelfAttention(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, h, k = config.hidden_size, config.num_heads, config.dim_per_head
        self.config = config
        self.query = DenseGeneral((d, ), (h, k), ("embed", ), ("heads", "kv"), rngs=rngs)
        self.key = DenseGeneral((d, ), (h, k), ("embed", ), ("heads", "kv"), rngs=rngs)
        self.value = DenseGeneral((d, ), (h, k), ("embed", ), ("heads", "kv"), rngs=rngs)
        self.out = DenseGeneral((h, k), (d, ), ("heads", "kv"), ("embed", ), rngs=rngs)

    def __call__(self, x_BxLxD, bias_Bx1x1xL, dropout_key):
        q_BxLxHxK = constrain(self.query(x_BxLxD), ("batch", "length", "heads", "kv"))
        k_BxLxHxK = constrain(self.key(x_BxLxD), ("batch", "length", "heads", "kv"))
        v_BxLxHxK = constrain(self.value(x_BxLxD), ("batch", "length", "heads", "kv"))
        context_BxLxHxK = self_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, bias_Bx1x1xL,
                                         implementation=self.config.attention,
                                         dropout_rate=self.config.attention_dropout,
                                         dropout_key=dropout_key)
        return self.out(context_BxLxHxK)


class Layer(nnx.Module):
    """One post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        self.config = config
        self.attention = SelfAttention(config, rngs=rngs)
        self.attention_norm = LayerNorm(d, config.layer_norm_eps)
        self.intermediate = DenseGeneral((d, ), (f, ), ("embed", ), ("mlp", ), rngs=rngs)
        self.output = DenseGeneral((f, ), (d, ), ("mlp", ), ("embed", ), rngs=rngs)
        self.output_norm = LayerNorm(d, config.layer_norm_eps)

    def __call__(self, x_BxLxD, bias_Bx1x1xL, dropout_key):
        rate = self.config.hidden_dropout
        attn_BxLxD = self.attention(x_BxLxD, bias_Bx1x1xL, _key(dropout_key, 0))
        x_BxLxD = self.attention_norm(x_BxLxD + dropout(attn_BxLxD, rate, _key(dropout_key, 1)))
        h_BxLxF = constrain(gelu(self.intermediate(x_BxLxD)), ("batch", "length", "mlp"))
        mlp_BxLxD = dropout(self.output(h_BxLxF), rate, _key(dropout_key, 2))
        return constrain(self.output_norm(x_BxLxD + mlp_BxLxD), _ACT)


class Pooler(nnx.Module):
    """BERT's pooled output: tanh(dense(hidden state of the first token))."""
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.dense = DenseGeneral((d, ), (d, ), ("embed", ), ("act_embed", ), rngs=rngs)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        return jnp.tanh(self.dense(x_BxLxD[:, 0]))


class Encoder(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        e, d = config.embedding_dim, config.hidden_size
        self.embeddings_project = (DenseGeneral((e, ), (d, ), ("embed", ),
                                                ("act_embed", ), rngs=rngs) if e != d else None)
        self.layers = nnx.List([Layer(config, rngs=rngs) for _ in range(config.num_layers)])
        # Only heads that classify the pooled output call it; MLM training never computes it.
        self.pooler = Pooler(config, rngs=rngs) if config.pooler else None

    def __call__(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *,
                 dtype=jnp.float32, dropout_key: jax.Array | None = None) -> jax.Array:
        """Hidden states `x_BxLxD`; `dropout_key=None` runs deterministically. Token types are
        ignored by a model without a token-type embedding."""
        x_BxLxE = self.embeddings(input_ids_BxL, token_type_ids_BxL, dtype, _key(dropout_key, 0))
        x_BxLxD = (x_BxLxE if self.embeddings_project is None else self.embeddings_project(x_BxLxE))
        x_BxLxD = constrain(x_BxLxD, _ACT)
        # Additive mask in fp32: padded keys get the most negative finite value, as HF does.
        bias_Bx1x1xL = jnp.where(attention_mask_BxL[:, None, None, :] > 0, 0.0,
                                 jnp.finfo(jnp.float32).min).astype(jnp.float32)
        run = _run_layer if self.config.remat == "none" else nnx.remat(
            _run_layer, policy=_REMAT_POLICIES[self.config.remat], prevent_cse=True)
        for i, layer in enumerate(self.layers):
            x_BxLxD = run(layer, x_BxLxD, bias_Bx1x1xL, _key(dropout_key, i + 1))
        return x_BxLxD

    def layer_qkv(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, layer: int,
                  dtype=jnp.float32,
                  dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(`q_BxLxHxK`, `k_BxLxHxK`, `v_BxLxHxK`) of layer `layer`'s self-attention (negative:
        counted from the last), running only the layers below it: what MiniLMv2 distills.
        Dropout keys are those `__call__` uses, so the layers below see the same masks."""
        layer = range(len(self.layers))[layer]
        x_BxLxE = self.embeddings(input_ids_BxL, token_type_ids_BxL, dtype, _key(dropout_key, 0))
        x_BxLxD = (x_BxLxE if self.embeddings_project is None else self.embeddings_project(x_BxLxE))
        x_BxLxD = constrain(x_BxLxD, _ACT)
        bias_Bx1x1xL = jnp.where(attention_mask_BxL[:, None, None, :] > 0, 0.0,
                                 jnp.finfo(jnp.float32).min).astype(jnp.float32)
        for i in range(layer):
            x_BxLxD = self.layers[i](x_BxLxD, bias_Bx1x1xL, _key(dropout_key, i + 1))
        attention = self.layers[layer].attention
        return tuple(
            constrain(projection(x_BxLxD), ("batch", "length", "heads", "kv"))
            for projection in (attention.query, attention.key, attention.value))

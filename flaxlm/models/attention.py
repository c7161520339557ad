"""Scaled dot-product self-attention, three ways (`model.attention`).

* "xla": scores and probabilities materialized as `BxHxLxL` arrays (softmax in fp32), as
  transformers computes them. Attention dropout is applied to the probabilities.
* "dot_product": `jax.nn.dot_product_attention`: XLA's fused attention on CPU and TPU, cuDNN's
  flash attention on GPU when the dtypes and shapes allow it (`implementation=None` lets JAX pick).
* "splash": the Pallas TPU splash-attention kernel (`jax.experimental.pallas.ops.tpu`), blockwise
  with an online softmax, so no `LxL` array ever reaches HBM. TPU only; sequence lengths must be
  multiples of 128.

Neither kernel can drop attention probabilities, so a training step with `attention_dropout > 0`
runs the "xla" path for attention (and says so once): set `model.attention_dropout=0` to use a
fused kernel in training. Evaluation and export (no dropout) always use the configured kernel.
Padding is exact in all three: padded keys get no weight; padded queries attend to the real keys.
"""

from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from flaxlm.models.config import ATTENTIONS
from flaxlm.models.layers import dropout
from flaxlm.sharding import activation_spec

_SPLASH_BLOCK = 128  # the kernel's tile along both sequence axes
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logging.getLogger("flaxlm").warning(message)


def self_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, bias_Bx1x1xL, *, implementation: str,
                   dropout_rate: float, dropout_key: jax.Array | None,
                   interpret: bool = False) -> jax.Array:
    """`context_BxLxHxK` in q's dtype. `bias_Bx1x1xL` is 0 for real keys and the most negative
    fp32 for padding. `interpret` runs the splash kernel in the Pallas interpreter (CPU tests)."""
    if implementation not in ATTENTIONS:
        raise ValueError(f"model.attention must be one of {ATTENTIONS}, got {implementation!r}")
    if implementation != "xla" and dropout_key is not None and dropout_rate > 0:
        _warn_once(f"model.attention={implementation!r} cannot apply attention dropout "
                   f"({dropout_rate}): training runs the 'xla' attention; set "
                   "model.attention_dropout=0 to train with the fused kernel")
        implementation = "xla"
    length = q_BxLxHxK.shape[1]
    if implementation == "splash" and length % _SPLASH_BLOCK:
        _warn_once(f"model.attention='splash' needs a sequence length that is a multiple of "
                   f"{_SPLASH_BLOCK}; length {length} runs 'dot_product'")
        implementation = "dot_product"
    scale = 1.0 / math.sqrt(q_BxLxHxK.shape[-1])  # the fused kernels'; "xla" keeps its own
    if implementation == "dot_product":
        # A boolean mask, not the fp32 bias: the bias would have to be cast to q's dtype, and
        # the most negative fp32 rounds to -inf in bf16. Logits and softmax are fp32 inside.
        return jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask=bias_Bx1x1xL == 0,
                                            scale=scale)
    if implementation == "splash":
        return _splash(q_BxLxHxK * jnp.asarray(scale, q_BxLxHxK.dtype), k_BxLxHxK, v_BxLxHxK,
                       bias_Bx1x1xL[:, 0, 0, :] == 0, interpret)
    # "xla": the ops the encoder ran before the kernels existed, bit for bit.
    scale_q = 1.0 / jnp.sqrt(jnp.float32(q_BxLxHxK.shape[-1])).astype(q_BxLxHxK.dtype)
    scores_BxHxLxL = jnp.einsum("bqhk,bshk->bhqs", q_BxLxHxK * scale_q, k_BxLxHxK)
    # Softmax in fp32 so bf16 compute does not lose the tail of the distribution.
    probs_BxHxLxL = jax.nn.softmax(scores_BxHxLxL.astype(jnp.float32) + bias_Bx1x1xL, axis=-1)
    probs_BxHxLxL = dropout(probs_BxHxLxL.astype(q_BxLxHxK.dtype), dropout_rate, dropout_key)
    return jnp.einsum("bhqs,bshk->bqhk", probs_BxHxLxL, v_BxLxHxK)


@functools.lru_cache(maxsize=None)
def _splash_kernel(heads: int, length: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import (splash_attention_kernel as kernel,
                                                                  splash_attention_mask as mask)
    block = min(512, length)  # 512 tiles for seq 512 (fewer grid steps); any multiple of 128
    sizes = kernel.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
    full = mask.MultiHeadMask([mask.FullMask((length, length))] * heads)
    return kernel.make_splash_mha(full, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)


def _splash(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, real_BxL, interpret: bool) -> jax.Array:
    """Padding as segment ids: every query is in segment 1 and a key is in segment 1 only if it
    is real, so queries (padded ones too) attend to exactly the real keys. A row with no real key
    puts every key in segment 1, keeping its (unused) output finite."""
    any_real_Bx1 = real_BxL.any(axis=1, keepdims=True)
    kv_segment_BxL = jnp.where(real_BxL | ~any_real_Bx1, 1, 0).astype(jnp.int32)

    from jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel import (SegmentIds
                                                                                          )

    def local(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, kv_segment_BxL):
        _, length, heads, _ = q_BxLxHxK.shape
        run = _splash_kernel(heads, length, interpret)
        q_segment_L = jnp.ones((length, ), jnp.int32)

        def one(q_LxHxK, k_LxHxK, v_LxHxK, kv_segment_L):
            to_hlk = functools.partial(jnp.transpose, axes=(1, 0, 2))
            out_HxLxK = run(to_hlk(q_LxHxK), to_hlk(k_LxHxK), to_hlk(v_LxHxK),
                            segment_ids=SegmentIds(q_segment_L, kv_segment_L))
            return to_hlk(out_HxLxK)

        return jax.vmap(one)(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, kv_segment_BxL)

    # A Pallas kernel is not partitioned by XLA: run it per shard (batch rows, heads).
    qkv_spec = activation_spec(q_BxLxHxK.shape, ("batch", "length", "heads", "kv"))
    if qkv_spec is None:
        return local(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, kv_segment_BxL)
    segment_spec = P(qkv_spec[0], None)
    return jax.shard_map(local, in_specs=(qkv_spec, qkv_spec, qkv_spec, segment_spec),
                         out_specs=qkv_spec, check_vma=False)(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK,
                                                              kv_segment_BxL)

"""Building blocks with logical axis names on every parameter.

Kernels keep attention heads as their own dimension (`D×H×K`), so tensor parallelism can shard
heads and conversion to HF's fused `(H·K)×D` weights is a reshape.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# BERT's initializer: truncated normal with stddev 0.02 for every weight matrix.
_init = jax.nn.initializers.truncated_normal(stddev=0.02)

# How a fine-tuning run draws the weights its init_from does not provide (`finetune.fresh_init`):
# truncated_normal is `_init` (BERT's TensorFlow code, run_classifier.py's output_weights: stddev
# 0.02 before the cut at ±2 stddev, 0.0176 after); normal is transformers' `_init_weights`,
# normal(0, 0.02) uncut; glorot_uniform is ELECTRA's fine-tuning heads (tagging_tasks.py and
# classification_tasks.py call tf.layers.dense with no initializer: TF1's default,
# U(±sqrt(6 / (fan_in + fan_out))), 0.071 stddev for a 384 → 9 tagger).
FRESH_INITS = ("truncated_normal", "normal", "glorot_uniform")


def param(value: jax.Array, axes: Sequence[str | None]) -> nnx.Param:
    assert len(axes) == value.ndim, (axes, value.shape)
    return nnx.Param(value, logical_axes=tuple(axes))


class DenseGeneral(nnx.Module):
    """`y = x · W + b` contracting the last `len(in_shape)` dims of x into `out_shape`."""
    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int],
                 in_axes: Sequence[str | None], out_axes: Sequence[str | None], *, rngs: nnx.Rngs):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        kernel = _init(rngs.params(), (math.prod(in_shape), math.prod(out_shape)), jnp.float32)
        self.kernel = param(kernel.reshape(self.in_shape + self.out_shape), (*in_axes, *out_axes))
        self.bias = param(jnp.zeros(self.out_shape, jnp.float32), out_axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_shape)
        kernel = self.kernel[...].astype(x.dtype)
        lhs = tuple(range(x.ndim - n_in, x.ndim))
        y = jax.lax.dot_general(x, kernel, ((lhs, tuple(range(n_in))), ((), ())))
        return y + self.bias[...].astype(x.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm whose statistics are always computed in fp32, whatever the compute dtype."""
    def __init__(self, dim: int, eps: float):
        self.eps = eps
        self.scale = param(jnp.ones((dim, ), jnp.float32), ("norm", ))
        self.bias = param(jnp.zeros((dim, ), jnp.float32), ("norm", ))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class Embed(nnx.Module):
    def __init__(self, num: int, dim: int, axes: Sequence[str | None], *, rngs: nnx.Rngs):
        self.embedding = param(_init(rngs.params(), (num, dim), jnp.float32), axes)

    def __call__(self, ids: jax.Array, dtype) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(dtype)

    def attend(self, x_NxD: jax.Array) -> jax.Array:
        """Tied output projection onto the table's rows, returned in fp32.

        The operands stay in the compute dtype (bf16 runs keep bf16 matmul throughput) but the
        products are accumulated and returned in fp32: rounding 250k-vocabulary logits to bf16
        (8 bits of mantissa) before the softmax would blur the loss.
        """
        table_VxD = self.embedding[...].astype(x_NxD.dtype)
        return jnp.matmul(x_NxD, table_VxD.T, preferred_element_type=jnp.float32)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; `key=None` means deterministic (evaluation).

    Each element's keep/drop bit comes from a counter-based hash of (key, element index):
    `jax.random.bernoulli`'s threefry took 25 ms for one layer's 16×12×128×128 attention
    probabilities on a 2-core CPU and this hash takes 0.4 ms (it vectorizes; threefry's rounds did
    not), with the same uniform low bits. An element is dropped when its 32-bit word is below
    round(rate · 2^32). The index (two 32-bit words past 2^32 elements) is built from
    per-dimension iotas, so every sharding of `x` sees
    the same mask and XLA computes each shard's part locally.
    """
    if key is None or rate == 0.0:
        return x
    key_words = jax.random.key_data(key).astype(jnp.uint32).reshape(-1)
    # Element index as two 32-bit words: trailing dims (fewer than 2^32 elements) and leading dims.
    split = next(s for s in range(x.ndim + 1) if math.prod(x.shape[s:]) < 1 << 32)
    if split == x.ndim and x.ndim:
        raise ValueError(f"dropout over shape {x.shape}: the last dimension has ≥ 2^32 elements")
    low_x, high_x = _flat_index(x.shape, range(split, x.ndim)), _flat_index(x.shape, range(split))
    bits_x = _fmix32(_fmix32(low_x ^ key_words[0]) + (key_words[-1] ^ _fmix32(high_x)))
    threshold = min(round(rate * (1 << 32)), (1 << 32) - 1)
    keep_x = bits_x >= jnp.uint32(threshold)
    return jnp.where(keep_x, x * jnp.asarray(1 / (1 - threshold / (1 << 32)), x.dtype), 0)


def _flat_index(shape: tuple[int, ...], dims) -> jax.Array:
    """Row-major index over `dims` of `shape`, broadcast to `shape` (uint32, wraps past 2^32)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for dim in reversed(list(dims)):
        index += jax.lax.broadcasted_iota(jnp.uint32, shape, dim) * jnp.uint32(stride % (1 << 32))
        stride *= shape[dim]
    return index


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: a bijection whose every output bit depends on every input
    bit, so consecutive indices give independent-looking words."""
    h ^= h >> 16
    h *= jnp.uint32(0x85EBCA6B)
    h ^= h >> 13
    h *= jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as BERT and XLM-R were trained with."""
    return jax.nn.gelu(x, approximate=False)


def redraw_fresh(model: nnx.Module, rngs: nnx.Rngs, fresh_init: str) -> None:
    """Redraws `model`'s weights as `fresh_init` says, before a run loads into it (the tensors it
    loads replace theirs, so only the fresh ones keep the draw). normal: every weight matrix and
    embedding table, as transformers initializes a model before `from_pretrained`; glorot_uniform:
    the kernels outside the encoder (the task head), as ELECTRA draws only its head so."""
    if fresh_init == "truncated_normal":
        return
    for path, module in nnx.iter_modules(model):
        if fresh_init == "normal" and isinstance(module, DenseGeneral):
            module.kernel.value = 0.02 * jax.random.normal(rngs.params(), module.kernel.value.shape)
        elif fresh_init == "normal" and isinstance(module, Embed):
            table = module.embedding.value
            module.embedding.value = 0.02 * jax.random.normal(rngs.params(), table.shape)
        elif isinstance(module, DenseGeneral) and path[:1] != ("encoder", ):
            flat = (math.prod(module.in_shape), math.prod(module.out_shape))
            kernel = jax.nn.initializers.glorot_uniform()(rngs.params(), flat, jnp.float32)
            module.kernel.value = kernel.reshape(module.kernel.value.shape)

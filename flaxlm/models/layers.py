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
        self.scale = param(jnp.ones((dim,), jnp.float32), ("norm",))
        self.bias = param(jnp.zeros((dim,), jnp.float32), ("norm",))

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
        """Tied output projection onto the table's rows."""
        return x_NxD @ self.embedding[...].astype(x_NxD.dtype).T


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; `key=None` means deterministic (evaluation).

    Each 32-bit threefry draw decides two elements through its 16-bit halves: half the random
    numbers `jax.random.bernoulli` would generate, which was 17% of a CPU train step. An element is
    dropped when its half is below t = round(rate · 2^16), so the rate is exact to 2^-17, and the
    kept values are scaled by the exact 2^16 / (2^16 - t). The draw depends only on each
    element's index, so every sharding of `x` sees the same mask.
    """
    if key is None or rate == 0.0:
        return x
    *lead, n = x.shape
    pairs = (n + 1) // 2
    bits_xP = jax.random.bits(key, (*lead, pairs), jnp.uint32)
    halves_xN = jnp.stack([bits_xP & 0xFFFF, bits_xP >> 16], axis=-1).reshape(*lead, 2 * pairs)
    threshold = round(rate * 65536)
    keep = halves_xN[..., :n] >= threshold
    return jnp.where(keep, x * jnp.asarray(65536 / (65536 - threshold), x.dtype), 0)


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as BERT and XLM-R were trained with."""
    return jax.nn.gelu(x, approximate=False)

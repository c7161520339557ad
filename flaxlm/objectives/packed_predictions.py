"""Prediction packing: the MLM vocabulary head over a batch's real predictions only.

A row has M prediction slots (`MaskingRates.budget`: the expected masked tokens + 20% + 8, for the
rows with long words), so on average a third of the slots are padding, and at a 250k vocabulary
the head over them is most of a step's wasted FLOPs. Packing gathers the real slots of each
data-parallel shard's rows (R rows × M slots) into one array of a fixed, static capacity C and
runs the head and the cross-entropy on R·M → C slots:

    C = min(R·M, ceil(R · mask_rate · seq_len · headroom))

Shards keep their own rows' slots (the packed array is `S×C×…` with S the data-parallel size,
sharded like the batch), so packing moves no data between devices. A micro-batch in which some
shard has more than C real slots is not truncated: the step runs the head over every slot
instead (`jax.lax.cond`, the same sums as without packing) and counts it in `unpacked_sum`. The
loss is therefore exactly the unpacked one either way, up to the order of the float sums.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from flaxlm.sharding import constrain

XentSums = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def data_shards(rows: int) -> int:
    """Data-parallel shards of the batch under the current (abstract) mesh: the groups packing
    keeps apart. 1 outside a mesh, or when the rows do not split evenly (then the batch is not
    sharded either: `flaxlm.sharding.activation_spec`)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return 1
    shards = mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
    return shards if rows % shards == 0 else 1


def capacity(rows: int, slots: int, seq_len: int, mask_rate: float, headroom: float) -> int:
    """C for R = `rows` rows of M = `slots` slots: the expected predictions × headroom."""
    return max(1, min(rows * slots, math.ceil(rows * mask_rate * seq_len * headroom)))


def packed_xent_sums(head: Callable[[jax.Array],
                                    jax.Array], h_BxMxD: jax.Array, labels_BxM: jax.Array,
                     weights_BxM: jax.Array, *, seq_len: int, mask_rate: float, headroom: float,
                     xent_sums: XentSums) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(Σ cross-entropy, Σ correct, 1.0 if the head ran unpacked else 0.0).

    `head` maps hidden states `...×D` at prediction slots to fp32 logits `...×V`; `xent_sums` is
    the objective's `(logits, labels, weights) -> (Σ xent, Σ correct)` over weighted slots.
    """
    b, m, d = h_BxMxD.shape
    shards = data_shards(b)
    rows = b // shards
    cap = capacity(rows, m, seq_len, mask_rate, headroom)
    n = rows * m  # slots per shard
    weights_SxN = weights_BxM.reshape(shards, n)
    real_SxN = weights_SxN != 0
    count_S = jnp.sum(real_SxN, axis=1, dtype=jnp.int32)

    def packed():
        # The c-th real slot of shard s goes to packed slot c; every other slot to the spare
        # slot `cap`, cut off below. Only reached when no shard has more than `cap` real slots.
        rank_SxN = jnp.cumsum(real_SxN, axis=1, dtype=jnp.int32) - 1
        dest_SxN = jnp.where(real_SxN, rank_SxN, cap)
        shard_Sx1 = jnp.arange(shards)[:, None]
        slot_SxN = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (shards, n))
        source_SxC = jnp.zeros((shards, cap + 1), jnp.int32).at[shard_Sx1,
                                                                dest_SxN].set(slot_SxN)[:, :cap]
        filled_SxC = jnp.arange(cap) < count_S[:, None]
        source_SxC = constrain(source_SxC, ("batch", "predictions"))
        h_SxCxD = jnp.take_along_axis(h_BxMxD.reshape(shards, n, d), source_SxC[..., None], axis=1)
        labels_SxC = jnp.take_along_axis(labels_BxM.reshape(shards, n), source_SxC, axis=1)
        weights_SxC = jnp.where(filled_SxC, jnp.take_along_axis(weights_SxN, source_SxC, axis=1),
                                0.0)
        return xent_sums(head(h_SxCxD), labels_SxC, weights_SxC)

    def every_slot():
        return xent_sums(head(h_BxMxD), labels_BxM, weights_BxM)

    overflow = jnp.any(count_S > cap)
    xent_sum, correct_sum = jax.lax.cond(overflow, every_slot, packed)
    return xent_sum, correct_sum, overflow.astype(jnp.float32)

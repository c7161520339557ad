"""Fine-tuning batches cut to one of a few fixed lengths, so jit compiles a handful of shapes.

Labelled rows are encoded at `data.seq_len` and are mostly padding (a CoNLL-2002 sentence is
about 40 sub-tokens; seq_len is 128 or 512). A global batch is cut to the smallest bucket that
holds its longest row: the model then computes over fewer padded positions, and since every batch
has one of `len(buckets)` shapes, the jitted train and eval steps compile at most that many times
each (jit caches one executable per input shape). The batch dimension never changes, so
data-parallel sharding is the same for every bucket; only the length does.

The bucket is chosen from the *global* batch (every process computes the same row indices), so
all processes cut their rows to the same length. Positions past a row's length are padding
(attention mask 0, weight 0), so cutting them changes no real token's output; only dropout masks
are drawn at the cut shape, so with dropout a bucketed run is a different (equally valid) random
draw than an uncut one.

`data.length_buckets`: "pow2" (powers of two from 16 below seq_len, then seq_len), "none" (every
batch at seq_len), or comma-separated lengths such as "32,64,128" (seq_len is added if missing,
so every row fits).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from flaxlm.errors import FlaxlmError

_SMALLEST_POW2 = 16


def parse(spec: str, seq_len: int) -> tuple[int, ...]:
    """The bucket lengths of `data.length_buckets`, ascending, the last one `seq_len`."""
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return (seq_len, )
    if spec == "pow2":
        lengths = []
        length = _SMALLEST_POW2
        while length < seq_len:
            lengths.append(length)
            length *= 2
        return (*lengths, seq_len)
    try:
        lengths = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise FlaxlmError(f"data.length_buckets={spec!r}: use pow2, none, or comma-separated "
                          "lengths such as 32,64,128") from None
    if not lengths or lengths[0] < 3 or lengths[-1] > seq_len:
        raise FlaxlmError(f"data.length_buckets={spec!r}: lengths must be in [3, data.seq_len="
                          f"{seq_len}]")
    return tuple(lengths) if lengths[-1] == seq_len else (*lengths, seq_len)


def bucket_length(longest_row: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding a row of `longest_row` tokens."""
    for length in buckets:
        if longest_row <= length:
            return length
    raise ValueError(f"a row of {longest_row} tokens is longer than every bucket {buckets}")


def row_lengths(attention_mask_NxL: np.ndarray) -> np.ndarray:
    """Real tokens of each row (rows are left-aligned: padding only at the end)."""
    return np.count_nonzero(attention_mask_NxL, axis=1)


def cut(batch: Mapping[str, np.ndarray], length: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """`batch` with the length axis of `keys` cut to `length` (the others as they are)."""
    return {k: (v[:, :length] if k in keys else v) for k, v in batch.items()}

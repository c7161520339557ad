"""FLOP counting for MFU, one convention everywhere.

Convention: a matmul with P parameters costs 2·P FLOPs per token forward and 4·P backward, so
6·P per token for a training step, counted over the encoder's matmul parameters (embedding
look-ups are gathers, not matmuls). Attention scores and the weighted sum add 4·L·S·D per token
forward (L layers, S sequence length, D = heads × head dim), fully bidirectional, not halved for
causality; ×3 for training. Heads add their own matmuls only where they are computed (the MLM head
only at masked positions). MFU = counted FLOPs / step time / peak FLOP/s of the devices.
"""

from __future__ import annotations

from flaxlm.models.config import ModelConfig

# Dense peak FLOP/s per chip at the matmul dtype people train in (bf16), from vendor specs.
PEAK_FLOPS_BY_DEVICE_KIND = {
    "TPU v2": 45e12 / 2,  # per core: a v2 chip has 2 cores, each a JAX device
    "TPU v3": 123e12 / 2,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5": 459e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}

# This project's 2-core CPU machines: fp32 XLA matmul measured at ~185 GFLOP/s (see docs).
CPU_PEAK_FLOPS = 185e9


def peak_flops_per_device(device_kind: str, platform: str) -> float:
    if platform == "cpu":
        return CPU_PEAK_FLOPS
    for prefix in sorted(PEAK_FLOPS_BY_DEVICE_KIND, key=len, reverse=True):
        if device_kind.startswith(prefix):
            return PEAK_FLOPS_BY_DEVICE_KIND[prefix]
    return 0.0  # unknown accelerator: MFU is reported as 0 rather than invented


def matmul_params(config: ModelConfig) -> int:
    """Matmul parameters of the encoder body (attention projections and MLP, with biases)."""
    d, f = config.hidden_size, config.intermediate_size
    inner = config.num_heads * config.dim_per_head
    attention = 3 * (d * inner + inner) + inner * d + d
    mlp = d * f + f + f * d + d
    return config.num_layers * (attention + mlp)


def encoder_train_flops(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs of the encoder body for one example of `seq_len` tokens."""
    inner = config.num_heads * config.dim_per_head
    attention_forward = 4.0 * config.num_layers * seq_len * inner
    return seq_len * (6.0 * matmul_params(config) + 3.0 * attention_forward)


def encoder_train_flops_cut(config: ModelConfig, tokens: float, token_keys: float) -> float:
    """Training FLOPs of the encoder body for `tokens` real tokens that attend over
    `token_keys` positions in all (Σ tokens × the length their batch was cut to); equals
    `tokens / seq_len × encoder_train_flops(config, seq_len)` when every batch has seq_len."""
    inner = config.num_heads * config.dim_per_head
    return tokens * 6.0 * matmul_params(config) + 3.0 * 4.0 * config.num_layers * inner * token_keys

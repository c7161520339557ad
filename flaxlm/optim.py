"""AdamW with a weight-decay mask, warmup + linear decay (with optional warm restarts), clipping."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from flaxlm.errors import FlaxlmError

# Parameters named like this are biases or LayerNorm gains: decaying them hurts (BERT, RoBERTa).
_NO_DECAY_NAMES = ("bias", "scale")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 5e-4
    warmup_steps: int = 0
    total_steps: int = 1000
    end_learning_rate: float = 0.0
    # Steps at which the schedule restarts from a fresh warmup (SELECTRA restarts at 150k).
    restart_steps: tuple[int, ...] = ()
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    max_grad_norm: float = 1.0  # 0 disables clipping

    def validate(self) -> None:
        if self.learning_rate <= 0:
            raise FlaxlmError(f"train.learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.warmup_steps:
            raise FlaxlmError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if sorted(self.restart_steps) != list(self.restart_steps) or any(
                not 0 < s < self.total_steps for s in self.restart_steps):
            raise FlaxlmError(f"train.restart_steps must be increasing and inside (0, "
                              f"{self.total_steps}), got {self.restart_steps}")


def _segment(config: OptimConfig, length: int) -> optax.Schedule:
    warmup = min(config.warmup_steps, length)
    decay = optax.linear_schedule(config.learning_rate, config.end_learning_rate,
                                  max(length - warmup, 1))
    # Jitted, XLA divides by the horizon as a multiply by its reciprocal, which can overshoot 1:
    # past the horizon the rate went to -3e-11 instead of end_learning_rate. It never goes below.
    floor = min(config.learning_rate, config.end_learning_rate)
    return optax.join_schedules([
        optax.linear_schedule(0.0, config.learning_rate, warmup),
        lambda count: jnp.maximum(decay(count), floor)
    ], [warmup])


def learning_rate_schedule(config: OptimConfig) -> optax.Schedule:
    """Warmup then linear decay; each restart starts the same shape again over the remaining steps."""
    boundaries = [0, *config.restart_steps, config.total_steps]
    segments = [_segment(config, end - start) for start, end in zip(boundaries, boundaries[1:])]
    return optax.join_schedules(segments, list(config.restart_steps))


def decay_mask(params: Any) -> Any:
    def decays(path, _):
        return getattr(path[-1], "key", None) not in _NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(decays, params)


def scale_by_leaf(scales: Mapping[str, float], params: Any) -> optax.GradientTransformation:
    """Multiplies each parameter's update by `scales["/"-joined name]` (1 where absent).

    Chained after AdamW this is a per-parameter learning rate (layer-wise LR decay) that scales
    the decoupled weight decay with it, as a per-group learning rate would. It holds no state, so
    optimizer-state paths stay equal to parameter paths (and keep their shardings), unlike
    `optax.multi_transform`, whose per-group states no longer mirror the parameters.
    """
    names = {
        "/".join(str(k.key) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    unknown = sorted(set(scales) - names)
    if unknown:
        raise FlaxlmError(f"learning-rate scale for {unknown[0]!r}, which is not a parameter "
                          f"({len(unknown)} unknown names)")
    factors = jax.tree_util.tree_map_with_path(
        lambda path, _: float(scales.get("/".join(str(k.key) for k in path), 1.0)), params)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, f: u * f if f != 1.0 else u, updates, factors), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


LAYER_DECAY_STYLES = ("flaxlm", "electra")


def layer_decay_scales(num_layers: int, param_paths: list[str], decay: float,
                       style: str = "flaxlm") -> dict[str, float]:
    """{parameter: decay ** depth} of layer-wise learning-rate decay over an encoder of L layers;
    parameters outside `encoder/` (the task head) and the pooler keep the base rate.

    "flaxlm": layer i gets d^(L-i) (the top layer d), the embeddings d^(L+1).
    "electra": one power more everywhere below the head, as google-research/electra
    model/optimization.py `_get_layer_lrs` (lines 181-193 at 8a46635) computes it: depth 0 for
    the embeddings, i+1 for layer i, L+2 for `task_specific/`, rate d^(L+2-depth), so the top
    layer gets d² and the embeddings d^(L+2).
    """
    if style not in LAYER_DECAY_STYLES:
        raise FlaxlmError(f"finetune.layer_decay_style={style!r}: one of "
                          f"{', '.join(LAYER_DECAY_STYLES)}")
    extra = 1 if style == "electra" else 0
    scales = {}
    for name in param_paths:
        parts = name.split("/")
        if parts[0] != "encoder" or parts[1] == "pooler":
            continue
        if parts[1] == "layers":
            depth = num_layers - int(parts[2])
        elif parts[1] in ("embeddings", "embeddings_project"):
            depth = num_layers + 1
        else:
            raise FlaxlmError(f"layer-wise LR decay has no depth for parameter {name}")
        scales[name] = decay ** (depth + extra)
    return scales


def check_head_lr_scale(scale: float) -> None:
    if not scale > 0:
        raise FlaxlmError(f"finetune.head_lr_scale must be > 0, got {scale}")


def finetune_lr_scales(num_layers: int, param_paths: list[str], layer_decay: float,
                       layer_decay_style: str, head_lr_scale: float) -> dict[str, float] | None:
    """{parameter: factor} of a fine-tuning run (None when every factor is 1): layer-wise decay
    over the encoder (`layer_decay_scales`) and `head_lr_scale` on the parameters outside
    `encoder/`, the task head that starts fresh (the pooler is the encoder's and keeps its rate).

    Why a head factor: a released encoder's final hidden states can be far smaller than a fresh
    post-LayerNorm encoder's RMS of ~1 (multilingual-e5-small: 0.26, docs/flare.md), and Adam's
    per-weight steps then move the fresh head's logits that much more slowly at the same rate.
    """
    scales = ({} if layer_decay == 1.0 else layer_decay_scales(num_layers, param_paths, layer_decay,
                                                               layer_decay_style))
    if head_lr_scale != 1.0:
        scales |= {name: head_lr_scale for name in param_paths if name.split("/")[0] != "encoder"}
    return scales or None


def make_optimizer(config: OptimConfig,
                   schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
    """AdamW over `schedule` (built from `config` when not given: a run builds it once and hands
    the same schedule to the step, which logs the rate each update used)."""
    config.validate()
    adamw = optax.adamw(schedule or learning_rate_schedule(config), b1=config.b1, b2=config.b2,
                        eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask)
    if config.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adamw)
    return adamw

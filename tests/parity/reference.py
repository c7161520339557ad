"""The PyTorch side of the training parity tests, and the flaxlm step it is compared with.

A parity test feeds the same weights and the same batch (flaxlm's own: its masks and positions)
to a flaxlm objective and to a transformers model whose loss is written here from the upstream
source, then compares the loss, the gradients and the parameters after one AdamW step. Nothing
here calls flaxlm's loss code: the torch side only borrows the conversion tables to load the same
weights into transformers' modules.

The optimizer is the one every upstream recipe here steps with: Adam with decoupled weight decay
(torch.optim.AdamW, bias-corrected) over two groups, biases and LayerNorm weights without decay,
after clipping the gradients' global norm as TensorFlow's `clip_by_global_norm` does
(g · c / max(‖g‖, c), no epsilon).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from flaxlm.convert.hf_config import hf_config
from flaxlm.convert.mappings.tables import table_for
from flaxlm.convert.mappings.tensors import to_hf
from flaxlm.models.param_tree import flat_names, unflatten_like
from flaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer
from flaxlm.run.steps import StepConfig, TrainProgram
from flaxlm.sharding import MeshConfig, make_mesh

LOSS_RTOL = 1e-5  # the bar for the loss, relative
PARAM_ATOL = 1e-5  # … and for every parameter after one step
# Gradients are compared too (the first Adam step is nearly lr·sign(g), so parameters alone would
# hide most gradient errors): fp32 sums over a few hundred terms agree to about 1e-6 relative;
# the absolute part is relative to the largest gradient of the model.
GRAD_RTOL, GRAD_ATOL_OF_MAX = 1e-4, 1e-5


@dataclasses.dataclass(frozen=True)
class Step:
    """One recipe's optimizer settings: its upstream's, at a learning rate (1e-3, the order of the
    recipes' 1e-4 to 6e-4) whose first step, about lr per parameter, is 100 × PARAM_ATOL. Adam's
    first step divides by |g| + eps, so a gradient near eps turns its float noise into a step
    difference of lr · δg / eps: at lr 1e-2 one LayerNorm gain of the MLM test differed by 2.6e-5
    although every gradient agreed to 1e-5 of the largest."""

    learning_rate: float = 1e-3
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0


def noisy_params(params, seed: int):
    """Trained-looking weights: noise on every tensor, so zero biases and unit LayerNorm gains
    cannot hide a mapping or gradient bug."""
    rng = np.random.default_rng(seed)
    flat = {
        k: np.asarray(v) + rng.normal(0, 0.1, v.shape).astype(np.float32)
        for k, v in flat_names(params).items()
    }
    return unflatten_like(params, flat)


def torch_model(config, flat_params: dict, task: str = "mlm"):
    """The transformers model of flaxlm's (arch, task) holding exactly `flat_params`, fp32,
    dropout off (both sides run deterministically)."""
    table = table_for(config.arch, task)
    model = getattr(transformers, table.hf_class)(hf_config(config, task))
    state = {
        k: torch.from_numpy(np.array(v))
        for k, v in to_hf(table, {
            k: np.asarray(v)
            for k, v in flat_params.items()
        }, config).items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    # Only tensors transformers ties to another one (the MLM decoder to the word embeddings).
    tied = {
        "cls.predictions.decoder.weight", "vocab_projector.weight", "lm_head.decoder.weight",
        "cls.predictions.decoder.bias", "lm_head.decoder.bias"
    }
    assert set(missing) <= tied, missing
    model.eval()
    return model


def random_torch_model(config, seed: int, task: str = "mlm"):
    """A transformers model of flaxlm's (arch, task) with noisy random weights, eval mode."""
    from tests.convert.conftest import randomize_torch

    torch.manual_seed(seed)
    model = getattr(transformers, table_for(config.arch, task).hf_class)(hf_config(config, task))
    randomize_torch(model, seed)
    return model.eval()


def flax_program(objective, config, step: Step) -> TrainProgram:
    optim = OptimConfig(learning_rate=step.learning_rate, warmup_steps=0, total_steps=100,
                        weight_decay=step.weight_decay, b2=step.b2, eps=step.eps,
                        max_grad_norm=step.max_grad_norm)
    mesh = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    return TrainProgram(objective, config, make_optimizer(optim), learning_rate_schedule(optim),
                        mesh, StepConfig(grad_accum_steps=1))


def flax_step(program: TrainProgram, params, frozen, batch: dict):
    """(loss, {name: gradient}, {name: parameter after one step}) from flaxlm's own step."""
    program.set_frozen(frozen)
    objective = program.objective
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}

    def loss_fn(p):
        model = nnx.merge(program.graphdef, program.frozen, p)
        return objective.loss(model, jbatch, objective.normalizers(jbatch), dtype=jnp.float32,
                              dropout_key=None)[0]

    grads = jax.jit(jax.grad(loss_fn))(params)
    state = program.state_from_params(params, jax.random.key_data(jax.random.key(0)))
    state, metrics = program.train_step(jax.device_put(state, program.state_shardings), jbatch)
    assert bool(metrics["finite"])
    return (float(metrics["loss"]), {
        k: np.asarray(v)
        for k, v in flat_names(grads).items()
    }, {
        k: np.asarray(v)
        for k, v in flat_names(state["params"]).items()
    })


def clip_global_norm_(params: list[torch.nn.Parameter], clip: float) -> None:
    """TensorFlow's clip_by_global_norm (BERT's and ELECTRA's optimization.py), in place."""
    norm = torch.sqrt(sum(torch.sum(p.grad.double() ** 2) for p in params)).float()
    scale = clip / torch.maximum(norm, torch.tensor(clip))
    for p in params:
        p.grad.mul_(scale)


def adamw_step(named: dict[str, torch.nn.Parameter], step: Step, *,
               torch_clip: bool = False) -> None:
    """One AdamW step: weight decay on every tensor but biases and LayerNorm weights.
    `torch_clip`: clip as torch's clip_grad_norm_ does (c / (‖g‖ + 1e-6), transformers'
    research distiller.py), else as TensorFlow's clip_by_global_norm."""
    params = [p for p in named.values() if p.grad is not None]
    if step.max_grad_norm > 0 and torch_clip:
        torch.nn.utils.clip_grad_norm_(params, step.max_grad_norm)
    elif step.max_grad_norm > 0:
        clip_global_norm_(params, step.max_grad_norm)

    def no_decay(name: str) -> bool:
        return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name

    groups = [{
        "params": [p for n, p in named.items() if p.grad is not None and not no_decay(n)],
        "weight_decay": step.weight_decay
    }, {
        "params": [p for n, p in named.items() if p.grad is not None and no_decay(n)],
        "weight_decay": 0.0
    }]
    optimizer = torch.optim.AdamW(groups, lr=step.learning_rate, betas=(0.9, step.b2), eps=step.eps)
    optimizer.step()


def to_flax_names(config, hf_tensors: dict[str, torch.Tensor],
                  task: str = "mlm") -> dict[str, np.ndarray]:
    """A transformers state dict → flaxlm names, through the same conversion table."""
    from flaxlm.convert.mappings.tensors import from_hf
    from flaxlm.convert.model_io import abstract_params

    _, abstract = abstract_params(config, task)
    expected = {k: v.shape for k, v in flat_names(abstract).items()}
    params, _, _ = from_hf(table_for(config.arch, task), {
        k: v.detach().numpy().copy()
        for k, v in hf_tensors.items()
    }, config, expected, allow_missing_head=False)
    return params


def assert_same_step(name: str, flax_loss: float, torch_loss: float, flax_grads: dict,
                     torch_grads: dict, flax_after: dict, torch_after: dict, before: dict) -> None:
    """Loss within LOSS_RTOL, gradients within GRAD_*, parameters within PARAM_ATOL, and the
    step moved every compared tensor by far more than the tolerance."""
    print(f"\n{name}: loss flaxlm {flax_loss:.7f} torch {torch_loss:.7f} "
          f"(rel {abs(flax_loss - torch_loss) / abs(torch_loss):.1e})")
    np.testing.assert_allclose(flax_loss, torch_loss, rtol=LOSS_RTOL)
    assert set(torch_grads) <= set(flax_grads)
    worst_grad = worst_param = 0.0
    # Relative to the largest gradient of all: some are zero in exact arithmetic (the key bias,
    # which softmax cancels) and only float noise on either side.
    largest = max(float(np.abs(g).max()) for g in torch_grads.values())
    for k, g in torch_grads.items():
        np.testing.assert_allclose(flax_grads[k], g, rtol=GRAD_RTOL,
                                   atol=GRAD_ATOL_OF_MAX * largest, err_msg=k)
        worst_grad = max(worst_grad, float(np.abs(flax_grads[k] - g).max()) / largest)
    moved = 0
    for k, p in torch_after.items():
        np.testing.assert_allclose(flax_after[k], p, rtol=0, atol=PARAM_ATOL, err_msg=k)
        worst_param = max(worst_param, float(np.abs(flax_after[k] - p).max()))
        moved += np.abs(p - before[k]).max() > 50 * PARAM_ATOL
    print(f"{name}: {len(torch_grads)} gradients (worst |Δ| {worst_grad:.1e} of the largest), "
          f"{len(torch_after)} parameters after one step (worst |Δ| {worst_param:.1e}), "
          f"{moved} moved by > {50 * PARAM_ATOL:g}")
    assert moved >= len(torch_grads) // 2  # a step that moves nothing would prove nothing

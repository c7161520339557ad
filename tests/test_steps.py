"""Sharding equivalence, gradient accumulation, NaN handling and the optimizer."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm.models.config import preset
from flaxlm.objectives.mlm import MaskedLM
from flaxlm.optim import OptimConfig, decay_mask, learning_rate_schedule, make_optimizer
from flaxlm.run.steps import StepConfig, TrainProgram
from flaxlm.sharding import MeshConfig, host_batch_to_global, make_mesh

B, L, M, V = 16, 32, 8, 1000


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(5, V, (B, L)).astype(np.int32)
        ids[:, 0] = 0
        ids[::3, L - 6:] = 1  # padding in some rows
        out.append(
            dict(input_ids=ids, attention_mask=(ids != 1).astype(np.int32),
                 token_type_ids=np.zeros_like(ids),
                 masked_positions=rng.integers(1, L - 6, (B, M)).astype(np.int32),
                 masked_labels=rng.integers(5, V,
                                            (B, M)).astype(np.int32), masked_weights=(rng.random(
                                                (B, M)) < 0.9).astype(np.float32)))
    return out


def _run(mesh_shape, accum=1, dropout=0.1, steps=3, model=None):
    config = model or preset("tiny", hidden_dropout=dropout, attention_dropout=dropout)
    optim = OptimConfig(learning_rate=1e-3, warmup_steps=1, total_steps=10)
    devices = jax.devices()[:int(np.prod(mesh_shape))]
    mesh = make_mesh(MeshConfig(*mesh_shape), devices)
    program = TrainProgram(MaskedLM(), config, make_optimizer(optim), learning_rate_schedule(optim),
                           mesh, StepConfig(grad_accum_steps=accum))
    state = program.init_state(jax.random.key_data(jax.random.key(0)))
    losses = []
    for batch in _batches(steps):
        state, metrics = program.train_step(state, host_batch_to_global(mesh, batch))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state["params"]), state


@pytest.fixture(scope="module")
def one_device_run():
    losses, params, _ = _run((1, 1, 1))
    return losses, params


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_meshes_match_one_device(mesh_shape, one_device_run):
    reference, ref_params = one_device_run
    losses, params, state = _run(mesh_shape)
    np.testing.assert_allclose(losses, reference, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), params, ref_params)
    # The parameters really are split across devices on fsdp/tensor meshes.
    kernel = state["params"]["encoder"]["layers"][0]["intermediate"]["kernel"]
    if mesh_shape[1] > 1 or mesh_shape[2] > 1:
        assert len({s.data.shape for s in kernel.addressable_shards} - {kernel.shape}) == 1


def test_gradient_accumulation_equals_one_big_batch():
    big, big_params, _ = _run((2, 1, 1), accum=1, dropout=0.0)
    acc, acc_params, _ = _run((2, 1, 1), accum=4, dropout=0.0)
    np.testing.assert_allclose(acc, big, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), acc_params, big_params)


def test_nonfinite_step_is_skipped_and_counted():
    config = preset("tiny", hidden_dropout=0.0, attention_dropout=0.0)
    optim = OptimConfig(learning_rate=1e-3, total_steps=10)
    mesh = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    program = TrainProgram(MaskedLM(), config, make_optimizer(optim), learning_rate_schedule(optim),
                           mesh, StepConfig())
    state = program.init_state(jax.random.key_data(jax.random.key(0)))
    state["params"]["mlm_head"]["bias"] = state["params"]["mlm_head"]["bias"].at[7].set(jnp.nan)
    before = jax.device_get(state["params"])
    state, metrics = program.train_step(state, host_batch_to_global(mesh, _batches(1)[0]))
    assert not bool(metrics["finite"]) and int(state["skipped"]) == 1
    assert int(state["step"]) == 1
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(state["params"]),
                 before)


def test_weight_decay_skips_biases_and_norms():
    mask = decay_mask({
        "layer": {
            "kernel": 1,
            "bias": 1
        },
        "norm": {
            "scale": 1,
            "bias": 1
        },
        "word": {
            "embedding": 1
        }
    })
    assert mask == {
        "layer": {
            "kernel": True,
            "bias": False
        },
        "norm": {
            "scale": False,
            "bias": False
        },
        "word": {
            "embedding": True
        }
    }


def test_schedule_warmup_decay_and_restart():
    schedule = learning_rate_schedule(
        OptimConfig(learning_rate=1.0, warmup_steps=10, total_steps=100, restart_steps=(50, )))
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(30)) == pytest.approx(0.5)
    assert float(schedule(50)) == pytest.approx(0.0)  # warm restart: warmup again
    assert float(schedule(60)) == pytest.approx(1.0)
    assert float(schedule(80)) == pytest.approx(0.5)

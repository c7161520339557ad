"""Prediction packing (flaxlm/objectives/packed_predictions.py): the MLM head over real prediction
slots only gives the unpacked loss, sums and gradients below and at the packed capacity, on one
device and per data-parallel shard; over it, exactly the predictions past the capacity are left
out and counted."""

import jax
import numpy as np
import pytest

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from flaxlm.objectives.mlm import MaskedLM, MaskedLMConfig
from flaxlm.objectives.packed_predictions import capacity
from flaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer
from flaxlm.run.steps import StepConfig, TrainProgram
from flaxlm.sharding import MeshConfig, host_batch_to_global, make_mesh

B, L, M, V = 8, 32, 12, 1000
RATE, HEADROOM = 0.15, 1.2


def _batch(real_per_row: list[int], seed: int = 0) -> dict:
    """Rows with `real_per_row[b]` weighted slots, scattered among the row's M slots (packing must
    not rely on real slots coming first)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, V, (B, L)).astype(np.int32)
    ids[::3, L - 4:] = 1  # padding in some rows
    weights = np.zeros((B, M), np.float32)
    for b, k in enumerate(real_per_row):
        weights[b, rng.choice(M, k, replace=False)] = 1.0
    return dict(input_ids=ids, attention_mask=(ids != 1).astype(np.int32),
                token_type_ids=np.zeros_like(ids),
                masked_positions=rng.integers(1, L - 4, (B, M)).astype(np.int32),
                masked_labels=rng.integers(5, V, (B, M)).astype(np.int32), masked_weights=weights)


def _program(pack: bool, devices: int) -> TrainProgram:
    optim = OptimConfig(learning_rate=1e-3, warmup_steps=1, total_steps=10)
    mesh = make_mesh(MeshConfig(devices, 1, 1), jax.devices()[:devices])
    objective = MaskedLM(
        MaskedLMConfig(mask_rate=RATE, pack_predictions=pack, pack_headroom=HEADROOM))
    return TrainProgram(objective, preset("tiny"), make_optimizer(optim),
                        learning_rate_schedule(optim), mesh, StepConfig())


def _grads_fn(program: TrainProgram):
    """host batch -> (gradients, sums) of the program's loss at its initial parameters."""
    params = program.init_state(jax.random.key_data(jax.random.key(0)))["params"]
    key = jax.random.key(1)  # dropout on: both paths draw the same encoder masks

    def fn(params, batch):
        return program._grads_and_sums(params, program.frozen, batch,
                                       program.objective.normalizers(batch), key)

    jitted = jax.jit(program._with_mesh(fn))
    return lambda host_batch: jax.device_get(
        jitted(params, host_batch_to_global(program.mesh, host_batch)))


def _assert_same(packed, unpacked, grad_scale=1.0):
    """Equal sums, and gradients equal up to `grad_scale` (a ratio of the losses' denominators)."""
    (grads_p, sums_p), (grads_u, sums_u) = packed, unpacked
    for name in ("loss_sum", "correct_sum"):
        np.testing.assert_allclose(sums_p[name], sums_u[name], rtol=1e-6, atol=0)
    # Relative to the largest gradient: some leaves (attention key biases) are zero in exact
    # arithmetic and hold only rounding noise, which no relative bound of their own can cover.
    scale = max(np.max(np.abs(g)) for g in jax.tree.leaves(grads_u))

    def close(path, a, b):
        assert np.max(np.abs(a - b * grad_scale)) <= 1e-6 * scale, jax.tree_util.keystr(path)

    jax.tree_util.tree_map_with_path(close, grads_p, grads_u)


@pytest.mark.parametrize("devices", [1, 2])
def test_packed_head_matches_every_slot_below_at_and_over_capacity(devices):
    rows = B // devices
    cap = capacity(rows, M, L, RATE, HEADROOM)  # per shard: ceil(rows · 0.15 · 32 · 1.2)
    assert cap < rows * M  # packing really drops slots here
    packed, unpacked = _grads_fn(_program(True, devices)), _grads_fn(_program(False, devices))
    # Below the capacity, and every shard exactly at it (the packed array full, no slot to spare).
    at = [cap // rows + (i < cap % rows) for i in range(rows)] * devices
    for real in ([3] * B, at):
        batch = _batch(real)
        result_p, result_u = packed(batch), unpacked(batch)
        assert result_p[1]["weight_sum"] == sum(real)
        assert result_p[1]["dropped_sum"] == 0.0, real
        assert "dropped_sum" not in result_u[1]
        _assert_same(result_p, result_u)
    # Shard 0 one over its capacity (the whole batch still under devices · cap when sharded):
    # its last real slot is left out and counted, and stays in the loss's denominator.
    over = list(at)
    over[0] += 1
    if devices > 1:
        over[-1] -= 1
    batch = _batch(over)
    result_p = packed(batch)
    assert result_p[1]["dropped_sum"] == 1.0 and result_p[1]["weight_sum"] == sum(over)
    shard0_BxM = batch["masked_weights"][:rows]
    last = np.flatnonzero(shard0_BxM.reshape(-1))[-1]
    without = dict(batch, masked_weights=batch["masked_weights"].copy())
    without["masked_weights"][last // M, last % M] = 0.0
    _assert_same(result_p, unpacked(without), grad_scale=(sum(over) - 1) / sum(over))


def test_train_step_reports_dropped_predictions():
    program = _program(True, 1)
    state = program.init_state(jax.random.key_data(jax.random.key(0)))
    cap = capacity(B, M, L, RATE, HEADROOM)
    for real in ([3] * B, [M] * B):
        state, metrics = program.train_step(state, host_batch_to_global(program.mesh, _batch(real)))
        assert float(metrics["dropped_predictions"]) == max(sum(real) - cap, 0)
        assert float(metrics["masked_tokens"]) == sum(real)


def test_bad_settings_are_refused():
    with pytest.raises(FlaxlmError, match="pack_headroom"):
        MaskedLM(MaskedLMConfig(pack_predictions=True, pack_headroom=0.0))
    from flaxlm.objectives.distill_bert import DistilBert, DistilBertConfig
    with pytest.raises(FlaxlmError, match="objective.mlm only"):
        DistilBert(DistilBertConfig(teacher_layers="", pack_predictions=True))

"""MiniLMv2 relation distillation: the loss against a direct implementation over explicit relation
heads, the frozen teacher inside the jitted step, and the loss falling on a short CPU run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm.models.param_tree import flat_names
from flaxlm.objectives.distill_minilm import (MiniLMv2, MiniLMv2Config, original_ids,
                                              relation_kl_sum)
from flaxlm.sharding import host_batch_to_global
from tests.distill.helpers import STUDENT, key, mlm_batch, program, with_teacher


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference_relation_kl(teacher_BxLxD, student_BxLxD, mask_BxL, heads):
    """Σ KL(teacher ‖ student) over rows, relation heads and real positions, one head at a time
    on the real positions only."""
    total = 0.0
    for b in range(teacher_BxLxD.shape[0]):
        real = np.nonzero(mask_BxL[b])[0]
        for r in range(heads):
            per_head = []
            for a in (teacher_BxLxD[b, real], student_BxLxD[b, real]):
                width = a.shape[-1] // heads
                a_r = a[:, r * width:(r + 1) * width].astype(np.float64)
                per_head.append(_softmax(np.einsum("is,js->ij", a_r, a_r) / np.sqrt(width)))
            p_t, p_s = per_head
            total += np.sum(p_t * (np.log(p_t) - np.log(p_s)))
    return total


def test_relation_kl_matches_explicit_heads_and_ignores_padding():
    rng = np.random.default_rng(0)
    mask_BxL = (np.arange(7) < np.array([7, 4, 2])[:, None]).astype(np.int32)
    # Teacher 3 heads × 16, student 2 heads × 12: relation heads (4) cut across both.
    teacher_BxLxHxK = rng.standard_normal((3, 7, 3, 16)).astype(np.float32)
    student_BxLxHxK = rng.standard_normal((3, 7, 2, 12)).astype(np.float32)
    got = relation_kl_sum(jnp.asarray(teacher_BxLxHxK), jnp.asarray(student_BxLxHxK),
                          jnp.asarray(mask_BxL), 4)
    want = reference_relation_kl(teacher_BxLxHxK.reshape(3, 7, 48),
                                 student_BxLxHxK.reshape(3, 7, 24), mask_BxL, 4)
    assert want > 1.0
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # What padding holds changes nothing.
    noisy = np.where(mask_BxL[..., None, None] > 0, student_BxLxHxK, 1e3)
    assert float(
        relation_kl_sum(jnp.asarray(teacher_BxLxHxK), jnp.asarray(noisy), jnp.asarray(mask_BxL),
                        4)) == pytest.approx(float(got), rel=1e-6)

    # The masked slots are given back before the forward passes.
    batch = mlm_batch(rng, 4)
    restored = np.asarray(original_ids({k: jnp.asarray(v) for k, v in batch.items()}))
    assert (batch["input_ids"] == 4).any() and not (restored == 4).any()
    np.testing.assert_array_equal(
        np.take_along_axis(restored, batch["masked_positions"], 1)[batch["masked_weights"] > 0],
        batch["masked_labels"][batch["masked_weights"] > 0])


def _objective(**config):
    return with_teacher(MiniLMv2(MiniLMv2Config(relation_heads=8, teacher_layer=1, **config)))


def test_frozen_teacher_is_cut_untrained_and_bitwise_unchanged():
    run = program(_objective(), devices=1)
    state = run.init_state(key())
    frozen_before = jax.device_get(run.frozen)
    # The teacher is cut after its distilled layer (1 of 3) and has no optimizer state.
    layers = {n.split("/")[2] for n in flat_names(run.frozen) if "/layers/" in n}
    assert sorted(layers) == ["0", "1"]
    assert not any("teacher" in n for n in flat_names(state["params"]))
    assert not any("teacher" in n for n in flat_names(state["opt_state"]))
    rng = np.random.default_rng(1)
    for _ in range(2):
        state, metrics = run.train_step(state, host_batch_to_global(run.mesh, mlm_batch(rng, 8)))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.frozen), frozen_before)
    assert float(metrics["loss"]) > 0
    # MFU counts the teacher's forward up to the distilled layer.
    counts = {"tokens": 100.0, "predictions": 15.0}
    deeper = with_teacher(MiniLMv2(MiniLMv2Config(relation_heads=8, teacher_layer=-1)))
    assert (deeper.train_flops(STUDENT, 16, counts) > run.objective.train_flops(
        STUDENT, 16, counts) > 0)


@pytest.mark.slow
def test_accumulation_equals_one_batch_on_a_sharded_mesh():
    whole, accumulated = program(_objective(), accum=1), program(_objective(), accum=2)
    state, acc_state = whole.init_state(key()), accumulated.init_state(key())
    rng = np.random.default_rng(1)
    for _ in range(2):
        batch = mlm_batch(rng, 8)
        state, metrics = whole.train_step(state, host_batch_to_global(whole.mesh, batch))
        acc_state, acc_metrics = accumulated.train_step(
            acc_state, host_batch_to_global(accumulated.mesh, batch))
        # The KLs of two random models' near-uniform relations are ~1e-4, each a sum of
        # p·(log p − log q) over fp32 log-probabilities of size ~log L ≈ 2 whose rounding
        # (~2e-7 a term) does not shrink with the KL: summed in another order (two micro-batches,
        # sharded) they agree to ~1e-9 absolute (measured 1.4e-9, i.e. 1.2e-5 relative), so a
        # relative bound alone would test fp32 cancellation, not accumulation.
        for name in ("loss", "qq_kl", "kk_kl", "vv_kl", "grad_norm"):
            assert float(acc_metrics[name]) == pytest.approx(float(metrics[name]), rel=1e-5,
                                                             abs=1e-8)


@pytest.mark.slow
def test_relation_kl_halves_on_a_short_cpu_run():
    run = program(_objective(), learning_rate=3e-3)
    state = run.init_state(key())
    rng = np.random.default_rng(2)
    losses = []
    for _ in range(60):
        state, metrics = run.train_step(state, host_batch_to_global(run.mesh, mlm_batch(rng, 8)))
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses

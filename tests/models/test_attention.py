"""model.attention kernels against the materialized ("xla") path, and remat against no remat."""

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax._src.ad_checkpoint import saved_residuals

from flaxlm.errors import FlaxlmError
from flaxlm.models import attention
from flaxlm.models.config import preset
from flaxlm.models.heads import MaskedLMModel


def _qkv_bias(length=128, b=3, h=2, k=16, seed=0):
    rng = np.random.default_rng(seed)
    q, k_, v = (jnp.asarray(rng.normal(size=(b, length, h, k)), jnp.float32) for _ in range(3))
    real_BxL = np.ones((b, length), bool)
    real_BxL[1, length // 3:] = False  # right padding
    real_BxL[2, :5] = False  # left padding
    bias = jnp.where(jnp.asarray(real_BxL)[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
    return q, k_, v, bias.astype(jnp.float32), real_BxL


def _attend(implementation, q, k, v, bias, **kw):
    return attention.self_attention(q, k, v, bias, implementation=implementation, dropout_rate=0.1,
                                    dropout_key=None, **kw)


def test_dot_product_equals_xla_path_with_padding():
    q, k, v, bias, _ = _qkv_bias(length=40)
    want = _attend("xla", q, k, v, bias)
    got = _attend("dot_product", q, k, v, bias)
    assert float(jnp.abs(want).max()) > 0.1  # not a comparison of near-zeros
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)  # padded queries too


def test_splash_kernel_equals_xla_path_with_padding():
    # The real Pallas kernel, run by the Pallas interpreter on CPU.
    q, k, v, bias, _ = _qkv_bias(length=128)
    want = _attend("xla", q, k, v, bias)
    got = _attend("splash", q, k, v, bias, interpret=True)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_splash_gradients_equal_xla_path():
    q, k, v, bias, _ = _qkv_bias(length=128)

    def loss(impl, q, k, v):
        return jnp.sum(jnp.sin(_attend(impl, q, k, v, bias, interpret=True)))

    want = jax.grad(lambda *a: loss("xla", *a), argnums=(0, 1, 2))(q, k, v)
    got = jax.grad(lambda *a: loss("splash", *a), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_kernel_falls_back_to_xla_for_attention_dropout_and_says_so_once(caplog):
    q, k, v, bias, _ = _qkv_bias(length=40)
    key = jax.random.key(3)
    attention._warned.clear()
    with caplog.at_level(logging.WARNING, logger="flaxlm"):
        got = [
            attention.self_attention(q, k, v, bias, implementation="dot_product", dropout_rate=0.1,
                                     dropout_key=key) for _ in range(2)
        ]
    want = attention.self_attention(q, k, v, bias, implementation="xla", dropout_rate=0.1,
                                    dropout_key=key)
    np.testing.assert_array_equal(got[0], want)  # the same dropout mask: the same path
    assert sum("cannot apply attention dropout" in r.message for r in caplog.records) == 1


def _model_grads(config, batch):
    """(loss, gradients, elements saved for the backward pass) of a tiny MLM model."""
    model = MaskedLMModel(config, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
        logits = nnx.merge(graphdef, params)(batch, dropout_key=jax.random.key(1))
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

    grad_fn = jax.value_and_grad(loss)
    # What jax.ad_checkpoint.print_saved_residuals prints, as data.
    saved = sum(aval.size for aval, _ in saved_residuals(loss, params))
    value, grads = jax.jit(grad_fn)(params)
    return value, nnx.to_pure_dict(grads), saved


def _batch(length=24):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (2, length)).astype(np.int32)
    ids[:, 0] = 0
    ids[1, length // 2:] = 1
    return dict(input_ids=ids, attention_mask=(ids != 1).astype(np.int32),
                token_type_ids=np.zeros_like(ids), masked_positions=np.array([[1, 4, 5], [2, 3, 7]],
                                                                             np.int32))


def test_remat_policies_and_dot_product_attention_give_equal_gradients():
    base = preset("tiny", attention_dropout=0.0)  # hidden dropout on: remat replays its masks
    want_value, want, saved_none = _model_grads(base, _batch())
    assert float(want_value) > 0.1
    saved = {}
    for change in (dict(remat="full"), dict(remat="dots_saveable"), dict(attention="dot_product")):
        value, got, saved[tuple(change.values())] = _model_grads(
            dataclasses.replace(base, **change), _batch())
        np.testing.assert_allclose(value, want_value, rtol=1e-6, err_msg=str(change))
        jax.tree.map(
            lambda g, w: np.testing.assert_allclose(g, w, atol=1e-6, rtol=1e-5, err_msg=str(change)
                                                    ), got, want)
    assert saved_none > saved[("dots_saveable", )] > saved[("full", )]


def test_unknown_attention_and_remat_are_user_errors():
    with pytest.raises(FlaxlmError, match="model.attention must be one of"):
        preset("tiny", attention="flash")
    with pytest.raises(FlaxlmError, match="model.remat must be one of"):
        preset("tiny", remat="some")

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import PRESETS, preset
from flaxlm.models.encoder import position_ids
from flaxlm.models.heads import MaskedLMModel, param_names


def test_xlmr_positions_skip_padding():
    config = preset("tiny")  # xlmr, pad id 1
    ids = jnp.array([[0, 7, 8, 2, 1, 1], [0, 9, 2, 1, 1, 1]])
    np.testing.assert_array_equal(position_ids(config, ids),
                                  [[2, 3, 4, 5, 1, 1], [2, 3, 4, 1, 1, 1]])


def test_bert_positions_are_absolute():
    config = dataclasses.replace(preset("tiny"), arch="bert", pad_token_id=0)
    ids = jnp.array([[101, 7, 102, 0]])
    np.testing.assert_array_equal(position_ids(config, ids), [[0, 1, 2, 3]])


def test_presets_carry_real_shapes():
    assert PRESETS["minilm-l6-h384"].vocab_size == 250_002
    assert PRESETS["minilm-l6-h384"].num_layers == 6
    assert PRESETS["minilm-l12-h384"].num_layers == 12
    assert PRESETS["xlmr-base"].hidden_size == 768
    assert PRESETS["bert-base-multilingual"].type_vocab_size == 2
    assert PRESETS["xlmr-base"].max_seq_len == 512


def test_unknown_preset_and_field_are_user_errors():
    with pytest.raises(FlaxlmError, match="unknown model preset"):
        preset("gpt-9")
    with pytest.raises(FlaxlmError, match="unknown model field"):
        preset("tiny", hiden_size=3)
    with pytest.raises(FlaxlmError, match="not divisible"):
        preset("tiny", hidden_size=66)


def _batch(rng, b=2, l=12, m=3, vocab=1000, pad=1):
    ids = rng.integers(5, vocab, (b, l)).astype(np.int32)
    ids[:, 0] = 0
    ids[1, 8:] = pad
    mask = (ids != pad).astype(np.int32)
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids),
                masked_positions=np.array([[1, 4, 5], [2, 3, 7]], np.int32))


def test_mlm_logits_only_at_masked_positions_and_tied():
    model = MaskedLMModel(preset("tiny"), rngs=nnx.Rngs(0))
    batch = _batch(np.random.default_rng(0))
    logits_BxMxV = model(batch)
    assert logits_BxMxV.shape == (2, 3, 1000)
    full_BxLxV = model.all_position_logits(batch["input_ids"], batch["attention_mask"],
                                           batch["token_type_ids"])
    gathered = np.take_along_axis(np.asarray(full_BxLxV), batch["masked_positions"][..., None], 1)
    np.testing.assert_allclose(logits_BxMxV, gathered, atol=1e-5)
    # No separate decoder matrix: the projection is the word embedding table.
    assert not [n for n in param_names(model) if "decoder" in n]


def test_padding_does_not_change_real_token_outputs():
    model = MaskedLMModel(preset("tiny"), rngs=nnx.Rngs(1))
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 1000, (1, 8)).astype(np.int32)
    padded = np.concatenate([ids, np.ones((1, 4), np.int32)], axis=1)
    short = model.encoder(ids, np.ones_like(ids), np.zeros_like(ids))
    long = model.encoder(padded, (padded != 1).astype(np.int32), np.zeros_like(padded))
    np.testing.assert_allclose(short, long[:, :8], atol=1e-5)


def test_dropout_is_deterministic_per_key():
    config = dataclasses.replace(preset("tiny"), hidden_dropout=0.3, attention_dropout=0.3)
    model = MaskedLMModel(config, rngs=nnx.Rngs(0))
    batch = _batch(np.random.default_rng(2))
    key = jax.random.key(5)
    a, b = model(batch, dropout_key=key), model(batch, dropout_key=key)
    c = model(batch, dropout_key=jax.random.key(6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_dropout_rate_scale_and_independence():
    from flaxlm.models.layers import dropout
    ones = jnp.ones((16, 12, 64, 64), jnp.float32)  # 786k elements: sampling error ~3.4e-4
    out = np.asarray(dropout(ones, 0.1, jax.random.key(0)))
    kept = out != 0
    assert abs(kept.mean() - 0.9) < 0.002
    np.testing.assert_allclose(out[kept], 1 / 0.9, rtol=1e-6)
    assert abs(out.mean() - 1.0) < 0.003  # inverted dropout keeps the expectation
    # Neighbouring elements (along each axis) and different keys decide independently:
    # P(both kept) = 0.81 within ±0.003.
    for a, b in ((kept[...,
                       1:], kept[..., :-1]), (kept[:, :,
                                                   1:], kept[:, :, :-1]), (kept[1:], kept[:-1])):
        assert abs((a & b).mean() - 0.81) < 0.003
    other = np.asarray(dropout(ones, 0.1, jax.random.fold_in(jax.random.key(0), 1))) != 0
    assert abs((kept & other).mean() - 0.81) < 0.003


def test_dropout_mask_does_not_depend_on_sharding():
    from jax.sharding import NamedSharding, PartitionSpec as P
    from flaxlm.models.layers import dropout
    x = jnp.arange(8 * 4 * 16 * 6, dtype=jnp.float32).reshape(8, 4, 16, 6) + 1
    mesh = jax.make_mesh((4, 2), ("a", "b"))
    sharded = jax.device_put(x, NamedSharding(mesh, P("a", None, "b")))
    f = jax.jit(lambda x: dropout(x, 0.3, jax.random.key(1)))
    np.testing.assert_array_equal(f(sharded), f(x))


def test_bf16_compute_keeps_fp32_params_and_is_close():
    model = MaskedLMModel(preset("tiny"), rngs=nnx.Rngs(0))
    batch = _batch(np.random.default_rng(3))
    fp32 = model(batch)
    bf16 = model(batch, dtype=jnp.bfloat16)
    assert bf16.dtype == jnp.float32  # logits are cast back for the loss
    assert model.encoder.embeddings.word.embedding[...].dtype == jnp.float32
    assert np.max(np.abs(fp32 - bf16)) < 0.1

"""Model-family options (embedding projection, optional token types, pooler), fp32 logits from
bf16 activations, the classifier models, and logical axes on every parameter."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from flaxlm.models.heads import (MODELS, MaskedLMModel, SequenceClassifierModel,
                                 TokenClassifierModel, config_for_head, gather_positions,
                                 logical_axes, param_names)
from flaxlm.models.layers import gelu
from flaxlm.sharding import logical_to_spec


def _batch(seed=0, b=3, l=10, vocab=1000, pad=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (b, l)).astype(np.int32)
    ids[:, 0] = 0
    ids[1, 6:] = pad
    return dict(input_ids=ids, attention_mask=(ids != pad).astype(np.int32),
                token_type_ids=np.zeros_like(ids),
                masked_positions=np.array([[1, 4], [2, 3], [5, 7]], np.int32))


def test_bf16_logits_are_an_fp32_projection_of_the_bf16_hidden_states():
    model = MaskedLMModel(preset("tiny"), rngs=nnx.Rngs(0))
    batch = _batch()
    logits_BxMxV = model(batch, dtype=jnp.bfloat16)
    assert logits_BxMxV.dtype == jnp.float32
    x_BxLxD = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                            dtype=jnp.bfloat16)
    head = model.mlm_head
    h_BxMxE = head.norm(gelu(head.transform(gather_positions(x_BxLxD, batch["masked_positions"]))))
    assert h_BxMxE.dtype == jnp.bfloat16
    table_VxE = model.encoder.embeddings.word.embedding[...].astype(jnp.bfloat16)
    # bf16 × bf16 products are exact in fp32, so an fp32 matmul of the same operands is the
    # reference; only the summation order may differ.
    want = (np.asarray(h_BxMxE, np.float32) @ np.asarray(table_VxE, np.float32).T +
            np.asarray(head.bias[...]))
    diff = np.abs(np.asarray(logits_BxMxV) - want).max()
    print(f"\nbf16 MLM logits vs fp32 projection: max |Δ| {diff:.2e}")
    assert diff <= 1e-6
    # Logits rounded to bf16 (the old behaviour) are off by far more than that.
    rounded = np.asarray(jnp.asarray(want).astype(jnp.bfloat16), np.float32)
    assert np.abs(rounded - want).max() > 1e-4


def test_embedding_size_adds_a_projection_and_narrows_the_tied_head():
    config = preset("tiny", embedding_size=32)  # hidden 64
    model = MaskedLMModel(config, rngs=nnx.Rngs(0))
    names = param_names(model)
    assert "encoder/embeddings_project/kernel" in names
    assert model.encoder.embeddings.word.embedding.shape == (1000, 32)
    assert model.encoder.embeddings_project.kernel.shape == (32, 64)
    assert model.mlm_head.transform.kernel.shape == (64, 32)
    batch = _batch()
    assert model(batch).shape == (3, 2, 1000)
    hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert hidden.shape == (3, 10, 64)
    same = MaskedLMModel(preset("tiny", embedding_size=64), rngs=nnx.Rngs(0))
    assert not [n for n in param_names(same) if "embeddings_project" in n]


def test_no_token_types_means_no_table_and_ignored_ids():
    config = preset("tiny", type_vocab_size=0)
    model = MaskedLMModel(config, rngs=nnx.Rngs(0))
    assert not [n for n in param_names(model) if "token_type" in n]
    batch = _batch()
    ones = dict(batch, token_type_ids=np.ones_like(batch["input_ids"]))
    without = {k: v for k, v in batch.items() if k != "token_type_ids"}
    np.testing.assert_array_equal(model(batch), model(ones))
    np.testing.assert_array_equal(model(batch), model(without))
    with pytest.raises(FlaxlmError, match="type_vocab_size must be 0 or positive"):
        preset("tiny", type_vocab_size=-1)


def test_missing_token_types_default_to_segment_zero():
    model = MaskedLMModel(preset("tiny"), rngs=nnx.Rngs(0))
    batch = _batch()
    without = {k: v for k, v in batch.items() if k != "token_type_ids"}
    np.testing.assert_array_equal(model(batch), model(without))


def test_pooler_is_a_parameter_only_when_configured_and_mlm_never_computes_it():
    plain = MaskedLMModel(preset("tiny"), rngs=nnx.Rngs(0))
    pooled = MaskedLMModel(preset("tiny", pooler=True), rngs=nnx.Rngs(0))
    assert not [n for n in param_names(plain) if "pooler" in n]
    assert {"encoder/pooler/dense/kernel", "encoder/pooler/dense/bias"} <= set(param_names(pooled))
    batch = _batch()
    before = pooled(batch)
    pooled.encoder.pooler.dense.kernel[...] = jnp.full_like(pooled.encoder.pooler.dense.kernel[...],
                                                            jnp.nan)
    np.testing.assert_array_equal(before, pooled(batch))
    grads = nnx.grad(lambda m: m(batch).sum())(pooled)
    assert not np.asarray(grads["encoder"]["pooler"]["dense"]["kernel"][...]).any()


@pytest.mark.parametrize("arch", ["bert", "xlmr"])
def test_classifiers_give_fp32_logits_per_token_and_per_sequence(arch):
    config = dataclasses.replace(preset("tiny", num_labels=5, classifier_dropout=0.3, pooler=True),
                                 arch=arch)
    batch = _batch()
    tokens = TokenClassifierModel(config, rngs=nnx.Rngs(0))
    sequences = SequenceClassifierModel(config, rngs=nnx.Rngs(0))
    for model, shape in ((tokens, (3, 10, 5)), (sequences, (3, 5))):
        logits = model(batch, dtype=jnp.bfloat16)
        assert logits.shape == shape and logits.dtype == jnp.float32
        key = jax.random.key(1)
        np.testing.assert_array_equal(model(batch, dropout_key=key), model(batch, dropout_key=key))
        assert not np.allclose(model(batch, dropout_key=key), model(batch))
        hidden = model.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        np.testing.assert_allclose(model.head_logits(hidden), model(batch), atol=1e-6)
    # The sequence logits come from the first token only.
    changed = dict(batch, input_ids=batch["input_ids"].copy())
    changed["input_ids"][:, 0] = 3
    assert not np.allclose(sequences(changed), sequences(batch))


def test_bert_sequence_classifier_needs_the_pooler_and_a_run_adds_it():
    config = dataclasses.replace(preset("tiny"), arch="bert", pad_token_id=0)
    with pytest.raises(FlaxlmError, match="needs model.pooler=True"):
        SequenceClassifierModel(config, rngs=nnx.Rngs(0))
    # A run builds its model through `config_for_head`: BERT's sequence head gets a pooler, no
    # other head or family does.
    assert config_for_head("sequence_classification", config).pooler
    assert not config_for_head("token_classification", config).pooler
    assert not config_for_head("mlm", config).pooler
    for arch in ("xlmr", "electra", "distilbert"):
        other = dataclasses.replace(
            config, arch=arch,
            type_vocab_size=0 if arch == "distilbert" else config.type_vocab_size)
        assert config_for_head("sequence_classification", other) == other
    xlmr = SequenceClassifierModel(preset("tiny"), rngs=nnx.Rngs(0))  # dense+tanh head, no pooler
    assert not [n for n in param_names(xlmr) if "pooler" in n]


@pytest.mark.parametrize("head", sorted(MODELS))
def test_every_parameter_has_logical_axes_with_sharding_rules(head):
    config = preset("tiny", embedding_size=32, pooler=True, num_labels=3)
    model = nnx.eval_shape(lambda: MODELS[head](config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    axes = jax.tree.leaves(nnx.to_pure_dict(logical_axes(state)),
                           is_leaf=lambda x: isinstance(x, tuple))
    shapes = jax.tree.leaves(nnx.to_pure_dict(state))
    assert len(axes) == len(shapes) == len(param_names(model))
    for names, value in zip(axes, shapes):
        assert len(names) == value.ndim
        logical_to_spec(names)  # raises on a name without a rule

"""`finetune.fresh_init`: the distribution a fine-tuning run draws the weights its init_from does
not provide from. truncated_normal (the default) is BERT's and ELECTRA's TensorFlow initializer;
normal is transformers' `_init_weights`, which a PyTorch loop's fresh classifier comes from;
glorot_uniform is what ELECTRA's fine-tuning heads (tf.layers.dense, no initializer) start from."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.objectives import finetune_config
from flaxlm.objectives.mlm import MaskedLM
from flaxlm.objectives.sequence import SequenceClassification, SequenceClassificationConfig
from flaxlm.objectives.token_classification import (TokenClassification, TokenClassificationConfig)

CONFIG = ModelConfig(arch="bert", vocab_size=64, hidden_size=256, num_layers=1, num_heads=4,
                     intermediate_size=64, max_position_embeddings=16, type_vocab_size=2,
                     pad_token_id=0, layer_norm_eps=1e-12, num_labels=200, pooler=True)


def _kernels(model) -> dict[str, np.ndarray]:
    return {
        "/".join(map(str, path)): np.asarray(value)
        for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param))
        if path[-1] in ("kernel", "embedding")
    }


@pytest.mark.parametrize("objective, config_cls, head", [
    (TokenClassification, TokenClassificationConfig, "classifier/kernel"),
    (SequenceClassification, SequenceClassificationConfig, "classifier/classifier/kernel"),
])
def test_normal_fresh_init_draws_every_matrix_from_transformers_distribution(
        objective, config_cls, head):
    default = _kernels(objective().build_model(CONFIG, nnx.Rngs(0)))
    normal = _kernels(objective(config_cls(fresh_init="normal")).build_model(CONFIG, nnx.Rngs(0)))
    assert default.keys() == normal.keys() and head in normal
    # 51,200 draws for the head: stddev sampling error ~6e-5, so 0.0176 and 0.0200 are apart.
    np.testing.assert_allclose(default[head].std(), 0.02 * 0.8796256610342398, rtol=0.02)
    np.testing.assert_allclose(normal[head].std(), 0.02, rtol=0.02)
    assert np.abs(default[head]).max() <= 0.04 < np.abs(normal[head]).max()
    for name, value in normal.items():  # the pooler, the encoder, the embeddings: all of them
        assert np.abs(value).max() > 0.04, name
        assert not np.array_equal(value, default[name]), name


@pytest.mark.parametrize("objective, config_cls, head", [
    (TokenClassification, TokenClassificationConfig, "classifier/kernel"),
    (SequenceClassification, SequenceClassificationConfig, "classifier/classifier/kernel"),
])
def test_glorot_fresh_init_draws_the_head_only_as_electra_does(objective, config_cls, head):
    default = _kernels(objective().build_model(CONFIG, nnx.Rngs(0)))
    glorot = _kernels(
        objective(config_cls(fresh_init="glorot_uniform")).build_model(CONFIG, nnx.Rngs(0)))
    fan_in, fan_out = glorot[head].shape
    limit = np.sqrt(6 / (fan_in + fan_out))  # 256 → 200: 0.114, stddev 0.066
    assert limit * 0.99 < np.abs(glorot[head]).max() <= limit
    np.testing.assert_allclose(glorot[head].std(), limit / np.sqrt(3), rtol=0.02)
    for name, value in glorot.items():  # the encoder (its pooler too) keeps flaxlm's draw
        assert np.array_equal(value, default[name]) == name.startswith("encoder/"), name


def test_fresh_init_is_checked_and_reaches_only_fine_tuning_objectives():
    with pytest.raises(FlaxlmError, match="finetune.fresh_init"):
        TokenClassificationConfig(fresh_init="xavier").validate()
    with pytest.raises(FlaxlmError, match="finetune.fresh_init"):
        finetune_config.objective_fields(MaskedLM.Config, {"fresh_init": "normal"}, "mlm")
    assert finetune_config.objective_fields(TokenClassificationConfig, {"fresh_init": "normal"},
                                            "token_classification")["fresh_init"] == "normal"

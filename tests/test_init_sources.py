"""Init rules against sources laid out differently: an ELECTRA pre-training run fine-tuned as an
encoder, and a source that holds nothing a rule asks for."""

import numpy as np
import pytest

from flaxlm.errors import FlaxlmError
from flaxlm.models.electra import discriminator_as_encoder
from flaxlm.run import weights
from flaxlm.run.protocol import InitRule

_ELECTRA_RUN = {
    "embeddings/word/embedding": (50, 8),
    "embeddings/norm/scale": (8, ),
    "discriminator/embeddings_project/kernel": (8, 16),
    "discriminator/layers/0/attention/query/kernel": (16, 2, 8),
    "generator/layers/0/attention/query/kernel": (4, 1, 4),
    "generator_head/bias": (50, ),
    "discriminator_head/prediction/kernel": (16, 1),
}
_CLASSIFIER = {
    "encoder/embeddings/word/embedding": (50, 8),
    "encoder/embeddings/norm/scale": (8, ),
    "encoder/embeddings_project/kernel": (8, 16),
    "encoder/layers/0/attention/query/kernel": (16, 2, 8),
    "classifier/kernel": (16, 3),
}


def test_an_electra_run_fine_tunes_from_its_discriminator_and_shared_embeddings():
    source = discriminator_as_encoder({n: np.zeros(s) for n, s in _ELECTRA_RUN.items()})
    plan = weights.plan((InitRule("encoder"), ), _CLASSIFIER,
                        {"init_from": {
                            n: v.shape
                            for n, v in source.items()
                        }})
    assert plan.loaded == {
        "encoder/embeddings/word/embedding": ("init_from", "encoder/embeddings/word/embedding"),
        "encoder/embeddings/norm/scale": ("init_from", "encoder/embeddings/norm/scale"),
        "encoder/embeddings_project/kernel": ("init_from", "encoder/embeddings_project/kernel"),
        "encoder/layers/0/attention/query/kernel": ("init_from",
                                                    "encoder/layers/0/attention/query/kernel")
    }
    assert plan.fresh == ["classifier/kernel"]
    # The view maps the discriminator's tensors, never the generator's.
    assert source["encoder/layers/0/attention/query/kernel"] is source[
        "discriminator/layers/0/attention/query/kernel"]


def test_other_runs_are_not_viewed_differently():
    flat = {"encoder/layers/0/attention/query/kernel": np.zeros(3)}
    assert discriminator_as_encoder(flat) is flat


def test_a_rule_whose_source_holds_none_of_its_tensors_is_refused():
    with pytest.raises(
            FlaxlmError, match=r"'encoder'.*holds none of its 4 tensors.*"
            r"discriminator_head/prediction/kernel"):
        weights.plan((InitRule("encoder"), ), _CLASSIFIER, {"init_from": _ELECTRA_RUN})


def test_a_frozen_tensor_missing_from_its_source_stops_the_run(monkeypatch):
    """A frozen tensor never trains: left fresh (random) it would stay so for the whole run."""
    import types

    two_layers = {"layers": {str(i): {"w": np.zeros((2, 2), np.float32)} for i in (0, 1)}}
    objective = types.SimpleNamespace(
        name="minilmv2", weight_sources=lambda: {"teacher": "runs/t"},
        init_rules=lambda has_init_from: (InitRule("teacher", "teacher", "encoder"), ))
    one_layer = {"encoder": {"layers": {"0": {"w": np.ones((2, 2), np.float32)}}}}
    monkeypatch.setattr(weights, "read_params", lambda path: (one_layer, None, 7))
    with pytest.raises(
            FlaxlmError, match=r"frozen tensor teacher/layers/1/w is not in weight "
            r"source 'teacher' \(runs/t\) \(1 frozen tensors"):
        weights.load(None, objective, "", None, {"teacher": two_layers})


def test_small_encoder_output_is_named_with_the_head_rate_that_compensates():
    """The weights line warns when the loaded encoder's last LayerNorm makes its output small for
    a fresh head (multilingual-e5-small: 0.25), and not when the scale is ~1 or already set."""
    from flaxlm.objectives.token_classification import (TokenClassification,
                                                        TokenClassificationConfig)
    norm = "encoder/layers/{}/output_norm/{}"
    params = {norm.format(i, "scale"): np.full(4, s) for i, s in ((0, 1.0), (1, 0.24))}
    params |= {norm.format(i, "bias"): np.full(4, 0.07) for i in (0, 1)}
    plan = weights.InitPlan({n: ("init_from", n) for n in params}, ["classifier/kernel"])
    note = weights.small_features_note(plan, params, TokenClassification())
    assert "output RMS is about 0.25" in note and "head_lr_scale=4 compensates" in note
    set_already = TokenClassification(TokenClassificationConfig(head_lr_scale=4.0))
    assert weights.small_features_note(plan, params, set_already) == ""
    params[norm.format(1, "scale")] = np.full(4, 0.9)  # the last layer's norm decides
    assert weights.small_features_note(plan, params, TokenClassification()) == ""
    params[norm.format(1, "scale")] = np.full(4, 0.24)
    nothing_fresh = weights.InitPlan(plan.loaded, [])
    assert weights.small_features_note(nothing_fresh, params, TokenClassification()) == ""
    pooled = weights.InitPlan(plan.loaded, ["classifier/kernel", "encoder/pooler/dense/kernel"])
    assert weights.small_features_note(pooled, params, TokenClassification()) == ""

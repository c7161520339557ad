"""config.json is read through transformers' own config classes: omitted fields get the defaults
transformers would build the PyTorch model with."""

from __future__ import annotations

import dataclasses
import json

import pytest
import transformers

from flaxlm.convert.hf_config import hf_config, model_config_from_hf
from flaxlm.convert.commands import import_hf
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from tests.convert.conftest import TOL, load_flax, make_hf_dir

# Everything a checkpoint may leave to the config class's defaults.
OPTIONAL = ("hidden_act", "layer_norm_eps", "type_vocab_size", "pad_token_id",
            "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
            "initializer_range", "position_embedding_type", "tie_word_embeddings", "is_decoder")


@pytest.mark.parametrize("model_type,cls,config_class", [
    ("bert", "BertForMaskedLM", transformers.BertConfig),
    ("xlm-roberta", "XLMRobertaForTokenClassification", transformers.XLMRobertaConfig),
])
def test_omitted_fields_get_transformers_defaults(model_type, cls, config_class):
    cfg = {
        "model_type": model_type,
        "architectures": [cls],
        "vocab_size": 120,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 40
    }
    config = model_config_from_hf(cfg, "config.json").model
    defaults = config_class()
    assert defaults.hidden_act == "gelu"
    assert config.layer_norm_eps == defaults.layer_norm_eps
    assert config.type_vocab_size == defaults.type_vocab_size
    assert config.pad_token_id == defaults.pad_token_id
    assert config.hidden_dropout == defaults.hidden_dropout_prob
    assert config.attention_dropout == defaults.attention_probs_dropout_prob
    # transformers' classifiers use the hidden dropout when classifier_dropout is unset.
    assert config.classifier_dropout == defaults.hidden_dropout_prob
    assert config.num_labels == defaults.num_labels


def test_checkpoint_without_optional_fields_imports_with_parity(tmp_path, tokenizers):
    hf_dir = tmp_path / "hf"
    make_hf_dir(hf_dir, "bert", tokenizers["wp_uncased"], hidden=32, heads=4, intermediate=40,
                type_vocab=2)
    cfg = json.loads((hf_dir / "config.json").read_text())
    assert cfg["hidden_act"] == "gelu" and cfg["pad_token_id"] == 0  # = BertConfig's defaults
    (hf_dir / "config.json").write_text(
        json.dumps({
            k: v
            for k, v in cfg.items() if k not in OPTIONAL
        }))
    result = import_hf(str(hf_dir), str(tmp_path / "run"))
    assert result["logits_max_abs_diff"] <= TOL
    config, _, _ = load_flax(str(tmp_path / "run"))
    assert (config.layer_norm_eps, config.type_vocab_size) == (1e-12, 2)


def test_wrong_types_are_refused_by_transformers_with_the_field_named():
    cfg = {"model_type": "bert", "architectures": ["BertModel"], "num_hidden_layers": "six"}
    with pytest.raises(FlaxlmError,
                       match="config.json: BertConfig refuses it: .*num_hidden_layers"):
        model_config_from_hf(cfg, "config.json")


@pytest.mark.parametrize("arch,hf_class,type_vocab", [
    ("bert", "BertForMaskedLM", 2),
    ("distilbert", "DistilBertForMaskedLM", 0),
    ("electra", "ElectraForMaskedLM", 2),
])
def test_head_width_transformers_cannot_hold_is_refused_for_every_family(
        arch, hf_class, type_vocab):
    config = ModelConfig(arch=arch, vocab_size=100, hidden_size=48, num_layers=1, num_heads=4,
                         intermediate_size=64, max_position_embeddings=40,
                         type_vocab_size=type_vocab, pad_token_id=0, layer_norm_eps=1e-12,
                         head_dim=16)
    config.validate()
    with pytest.raises(
            FlaxlmError, match=f"^model.head_dim=16 × num_heads=4 != hidden_size=48: "
            f"{hf_class} cannot hold it$"):
        hf_config(config, "mlm")
    hf_config(dataclasses.replace(config, head_dim=12), "mlm")  # 12 × 4 = 48: accepted

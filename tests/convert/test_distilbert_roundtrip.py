"""DistilBertForMaskedLM and DistilBertForTokenClassification: random transformers model with odd
shapes → import → parity with torch → export → every tensor bit for bit, and the exported config
is DistilBERT's."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from flaxlm.convert.export import export
from flaxlm.convert.import_hf import import_hf
from flaxlm.convert.parity import flax_outputs, torch_outputs
from flaxlm.data.tokenizers import load_tokenizer
from tests.convert.conftest import (TOL, assert_same_weights, load_flax, random_batch,
                                    randomize_torch)


@pytest.mark.slow
@pytest.mark.parametrize("hf_class",
                         ["DistilBertForMaskedLM", "DistilBertForTokenClassification"])
def test_distilbert_import_parity_export_bitwise(tmp_path, tokenizers, hf_class):
    import transformers
    from transformers import AutoTokenizer

    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    tok_dir = tokenizers["wp_cased"]
    tok = load_tokenizer(tok_dir)
    # 12-dim heads, an odd FFN width, 3 layers.
    config = transformers.DistilBertConfig(
        vocab_size=tok.vocab_size, dim=36, n_layers=3, n_heads=3, hidden_dim=50,
        max_position_embeddings=40, pad_token_id=tok.pad_id, activation="gelu", num_labels=5)
    torch_model = getattr(transformers, hf_class)(config)
    randomize_torch(torch_model)
    torch_model.eval()
    torch_model.save_pretrained(str(hf_dir))
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(str(hf_dir))
    shutil.copyfile(os.path.join(tok_dir, "vocab.txt"), hf_dir / "vocab.txt")

    imported = import_hf(str(hf_dir), str(run_dir))
    assert imported["logits_max_abs_diff"] <= TOL and imported["padding_tokens"] > 0
    flax_config, _, model = load_flax(str(run_dir))
    assert flax_config.arch == "distilbert" and flax_config.type_vocab_size == 0
    batch = random_batch(flax_config.vocab_size, tok.pad_id, tok.cls_id, 1)
    f_out, t_out = flax_outputs(model, batch), torch_outputs(torch_model, batch)
    assert np.abs(f_out["hidden"] - t_out["hidden"]).max() <= TOL
    assert np.abs(f_out["logits"] - t_out["logits"]).max() <= TOL
    assert np.abs(t_out["logits"]).max() > 1.0  # a check on near-zero outputs would prove little

    exported = export(str(run_dir), str(bundle))
    assert exported["logits_max_abs_diff"] <= TOL
    assert_same_weights(hf_dir, bundle)
    cfg_in = json.loads((hf_dir / "config.json").read_text())
    cfg_out = json.loads((bundle / "config.json").read_text())
    for key in ("model_type", "architectures", "vocab_size", "dim", "n_layers", "n_heads",
                "hidden_dim", "max_position_embeddings", "pad_token_id", "activation",
                "sinusoidal_pos_embds"):
        assert cfg_out[key] == cfg_in[key], key
    if hf_class != "DistilBertForMaskedLM":  # an MLM has no labels; transformers' placeholders
        assert cfg_out["id2label"] == cfg_in["id2label"]  # are not written back


def test_distilbert_sequence_classifier_roundtrip_and_pipeline(tmp_path, tokenizers):
    """DistilBertForSequenceClassification (pre_classifier → ReLU → dropout → classifier):
    import, logit parity, export bit for bit with its labels and dropout, and the release runs
    in `pipeline("text-classification")`."""
    import transformers
    from transformers import AutoTokenizer

    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    tok_dir = tokenizers["wp_cased"]
    tok = load_tokenizer(tok_dir)
    labels = ["negativo", "neutro", "positivo"]
    config = transformers.DistilBertConfig(
        vocab_size=tok.vocab_size, dim=36, n_layers=2, n_heads=3, hidden_dim=50,
        max_position_embeddings=40, pad_token_id=tok.pad_id, activation="gelu",
        seq_classif_dropout=0.3, id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    torch_model = transformers.DistilBertForSequenceClassification(config)
    randomize_torch(torch_model, scale=0.3)
    torch_model.eval()
    torch_model.save_pretrained(str(hf_dir))
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(str(hf_dir))
    shutil.copyfile(os.path.join(tok_dir, "vocab.txt"), hf_dir / "vocab.txt")

    imported = import_hf(str(hf_dir), str(run_dir))
    assert imported["head"] == "sequence_classification"
    flax_config, _, model = load_flax(str(run_dir))
    assert flax_config.classifier_dropout == 0.3
    batch = random_batch(flax_config.vocab_size, tok.pad_id, tok.cls_id, 1)
    f_logits = flax_outputs(model, batch)["logits"]
    t_logits = torch_outputs(torch_model, batch)["logits"]
    assert f_logits.shape == t_logits.shape == (3, 3)
    assert np.abs(f_logits - t_logits).max() <= TOL
    # Input-dependent, not near zero: a check on constant outputs would prove little.
    assert np.abs(t_logits).max() > 0.1 and np.abs(t_logits - t_logits[:1]).max() > 0.01

    exported = export(str(run_dir), str(bundle))
    assert exported["hf_class"] == "DistilBertForSequenceClassification"
    assert exported["logits_max_abs_diff"] <= TOL
    assert_same_weights(hf_dir, bundle)
    cfg_in = json.loads((hf_dir / "config.json").read_text())
    cfg_out = json.loads((bundle / "config.json").read_text())
    for key in ("architectures", "id2label", "label2id", "seq_classif_dropout", "dim", "n_layers"):
        assert cfg_out[key] == cfg_in[key], key

    classify = transformers.pipeline("text-classification", model=str(bundle), device="cpu")
    (prediction,) = classify("Il gatto dorme sul divano.")
    assert prediction["label"] in labels and 0.0 < prediction["score"] <= 1.0

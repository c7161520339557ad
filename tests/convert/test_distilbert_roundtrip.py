"""DistilBertForMaskedLM and DistilBertForTokenClassification: random transformers model with odd
shapes → import → parity with torch → export → every tensor bit for bit, and the exported config
is DistilBERT's."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from flaxlm.convert.commands import export, import_hf
from flaxlm.convert.hf_config import hf_config, model_config_from_hf
from flaxlm.convert.parity import flax_outputs, torch_outputs
from flaxlm.data import pair_batches
from flaxlm.data.pairs import Example
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from tests.convert.conftest import (TOL, assert_same_weights, load_flax, random_batch,
                                    randomize_torch)


@pytest.mark.slow
@pytest.mark.parametrize("hf_class", ["DistilBertForMaskedLM", "DistilBertForTokenClassification"])
def test_distilbert_import_parity_export_bitwise(tmp_path, tokenizers, hf_class):
    import transformers
    from transformers import AutoTokenizer

    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    tok_dir = tokenizers["wp_cased"]
    tok = load_tokenizer(tok_dir)
    # 12-dim heads, an odd FFN width, 3 layers.
    config = transformers.DistilBertConfig(
        vocab_size=tok.vocab_size, dim=36, n_layers=3, n_heads=3, hidden_dim=50,
        max_position_embeddings=40, pad_token_id=tok.pad_id, activation="gelu", num_labels=5,
        dropout=0.25, attention_dropout=0.15)  # not the defaults: the export must keep them
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
                "sinusoidal_pos_embds", "dropout", "attention_dropout"):
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
    config = transformers.DistilBertConfig(vocab_size=tok.vocab_size, dim=36, n_layers=2, n_heads=3,
                                           hidden_dim=50, max_position_embeddings=40,
                                           pad_token_id=tok.pad_id, activation="gelu",
                                           seq_classif_dropout=0.3,
                                           id2label=dict(enumerate(labels)), label2id={
                                               name: i
                                               for i, name in enumerate(labels)
                                           })
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
    (prediction, ) = classify("Il gatto dorme sul divano.")
    assert prediction["label"] in labels and 0.0 < prediction["score"] <= 1.0

    # Pairs as DistilBERT takes them: `[CLS] a [SEP] b [SEP]`, no token types, from flaxlm's
    # encoding and from the release tokenizer alike, with the same logits.
    pairs = [
        Example("Il gatto dorme sul divano.", "Il cane abbaia in giardino.", ""),
        Example("La città è molto grande e ha una lunga storia antica.", "Piove.", ""),
        Example("Una mappa.", "Il sistema Linux è una piattaforma per il computer.", "")
    ]
    rows = pair_batches.encode(load_tokenizer(str(run_dir / "tokenizer")), pairs, 40, {},
                               token_types=False).rows
    hf_tok = AutoTokenizer.from_pretrained(str(bundle))
    theirs = hf_tok([p.text for p in pairs], [p.text_pair for p in pairs], truncation=True,
                    max_length=40, padding="max_length", return_tensors="np")
    assert set(theirs) == {"input_ids", "attention_mask"}
    np.testing.assert_array_equal(rows["input_ids"], theirs["input_ids"])
    assert (rows["input_ids"] == tok.sep_id).sum() == 2 * len(pairs)
    pair_logits = flax_outputs(model, rows)["logits"]
    released = transformers.AutoModelForSequenceClassification.from_pretrained(str(bundle))
    t_pair_logits = torch_outputs(released, rows)["logits"]
    assert np.abs(pair_logits - t_pair_logits).max() <= TOL
    assert np.abs(t_pair_logits - t_pair_logits[:1]).max() > 0.01
    (prediction, ) = classify([{"text": pairs[0].text, "text_pair": pairs[0].text_pair}])
    assert prediction["label"] == labels[int(np.argmax(pair_logits[0]))]
    # The release (its tokenizer_config.json without token_type_ids) imports back.
    assert import_hf(str(bundle), str(tmp_path / "again"))["logits_max_abs_diff"] <= TOL


def _tiny_distilbert(**dropouts):
    return preset("distilbert-base-multilingual", vocab_size=90, hidden_size=36, num_layers=1,
                  num_heads=3, intermediate_size=50, num_labels=5, **dropouts)


def test_distilbert_token_classifier_exports_its_classifier_dropout_or_refuses():
    """DistilBertForTokenClassification drops out before its classifier with its one `dropout`:
    a trained classifier rate equal to the body's is exported (and read back); a different one
    cannot be, and is refused by name both at export and before training."""
    import transformers
    from flax import nnx

    from flaxlm.objectives.token_classification import TokenClassification

    same = _tiny_distilbert(hidden_dropout=0.25, attention_dropout=0.15, classifier_dropout=0.25)
    exported = hf_config(same, "token_classification")
    assert (exported.dropout, exported.attention_dropout) == (0.25, 0.15)
    assert transformers.DistilBertForTokenClassification(exported).dropout.p == 0.25
    back = model_config_from_hf(exported.to_dict(), "config.json").model
    assert (back.hidden_dropout, back.classifier_dropout) == (0.25, 0.25)

    apart = _tiny_distilbert(hidden_dropout=0.1, classifier_dropout=0.3)
    refusal = r"model.classifier_dropout=0.3 != model.hidden_dropout=0.1: .* one dropout rate"
    with pytest.raises(FlaxlmError, match=refusal):
        hf_config(apart, "token_classification")
    with pytest.raises(FlaxlmError, match=refusal):
        nnx.eval_shape(lambda: TokenClassification().build_model(apart, nnx.Rngs(0)))
    # The sequence classifier has a rate of its own, `seq_classif_dropout`.
    sequence = hf_config(apart, "sequence_classification")
    assert (sequence.dropout, sequence.seq_classif_dropout) == (0.1, 0.3)

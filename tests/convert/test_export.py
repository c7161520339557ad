"""A flaxlm workdir (as training leaves it) → release bundle with parity; failure modes; CLI."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from flaxlm import cli
from flaxlm.convert import export as export_module
from flaxlm.convert.commands import export
from flaxlm.convert.fill_mask import fill_mask_demo
from flaxlm.convert.mappings.tables import table_for
from flaxlm.convert.mappings.tensors import to_hf
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.param_tree import flat_names
from tests.convert.conftest import TOL, read_safetensors, write_workdir

METRICS = [{
    "step": 5,
    "loss": 6.1,
    "accuracy": 0.02
}, {
    "step": 10,
    "loss": 5.25,
    "accuracy": 0.0625
}, {
    "step": 10,
    "eval_loss": 5.5,
    "eval_accuracy": 0.05
}, {
    "step": 20,
    "loss": 1.0
}]  # past the exported step: a resumed run's leftovers


def _config(tok, arch="xlmr", **kw) -> ModelConfig:
    fields = dict(arch=arch, vocab_size=tok.vocab_size, hidden_size=48, num_layers=2, num_heads=4,
                  intermediate_size=37, max_position_embeddings=66, type_vocab_size=1,
                  pad_token_id=tok.pad_id, layer_norm_eps=1e-5)
    return ModelConfig(**{**fields, **kw})


@pytest.fixture(scope="module")
def sp_run(tmp_path_factory, tokenizers):
    path = tmp_path_factory.mktemp("sp_run") / "run"
    params = write_workdir(path, tokenizers["sp"], _config(load_tokenizer(tokenizers["sp"])),
                           steps=(5, 10), metrics=METRICS)
    return path, params


def test_export_writes_a_release_bundle_with_parity(sp_run, tmp_path):
    run, params = sp_run
    bundle = tmp_path / "bundle"
    result = export(str(run), str(bundle))
    print(f"\nexport parity xlmr workdir: {result}")
    assert result["step"] == 10 and result["logits_max_abs_diff"] <= TOL
    assert sorted(os.listdir(bundle)) == [
        "README.md", "config.json", "model.safetensors", "sentencepiece.bpe.model",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"
    ]

    config = _config(load_tokenizer(str(run / "tokenizer")))
    expected = to_hf(table_for("xlmr", "mlm"), flat_names(params[10]), config)
    released = read_safetensors(bundle / "model.safetensors")
    assert set(released) == set(expected)
    assert all(released[k].tobytes() == v.tobytes() for k, v in expected.items())

    from transformers import AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(str(bundle))
    assert len(hf_tok) == config.vocab_size and hf_tok.mask_token == "<mask>"
    hf_config = json.loads((bundle / "config.json").read_text())
    assert hf_config["architectures"] == ["XLMRobertaForMaskedLM"]
    assert (hf_config["pad_token_id"], hf_config["bos_token_id"],
            hf_config["eos_token_id"]) == (1, 0, 2)

    card = (bundle / "README.md").read_text()
    n_params = sum(np.size(x) for x in jax.tree.leaves(params[10]))
    for needle in ("XLMRobertaForMaskedLM", f"{n_params:,}", "300 tokens", "data/it/train.txt",
                   "- steps: 10", "| loss | 5.2500 | 10 |", "| eval_accuracy | 0.0500 | 10 |",
                   'pipeline("fill-mask"', "<mask>", "2 × 48 × 4"):
        assert needle in card, needle
    assert "1.0000" not in card  # metrics logged after the exported step are not reported


def test_export_step_overwrite_and_refusals(sp_run, tmp_path):
    run, params = sp_run
    bundle = tmp_path / "bundle"
    export(str(run), str(bundle), step=5)
    word = "roberta.embeddings.word_embeddings.weight"
    assert np.array_equal(
        read_safetensors(bundle / "model.safetensors")[word],
        params[5]["encoder"]["embeddings"]["word"]["embedding"])
    with pytest.raises(FlaxlmError, match="already exists"):
        export(str(run), str(bundle))
    export(str(run), str(bundle), overwrite=True)
    assert np.array_equal(
        read_safetensors(bundle / "model.safetensors")[word],
        params[10]["encoder"]["embeddings"]["word"]["embedding"])
    with pytest.raises(FlaxlmError, match="no checkpoint at step 7"):
        export(str(run), str(tmp_path / "other"), step=7)
    assert sorted(os.listdir(tmp_path)) == ["bundle"]


def test_failed_parity_leaves_nothing_at_out(sp_run, tmp_path, monkeypatch):
    """A conversion bug (simulated: the Flax side sees a perturbed weight) aborts the export."""
    run, _ = sp_run
    real_build = export_module.build_model

    def skewed_build(config, params, head):
        params = jax.tree.map(np.array, params)
        params["encoder"]["layers"][1]["attention"]["value"]["bias"][0, 3] += 1e-2
        return real_build(config, params, head)

    monkeypatch.setattr(export_module, "build_model", skewed_build)
    with pytest.raises(FlaxlmError, match=r"parity with PyTorch transformers failed: .* > 0.0001"):
        export(str(run), str(tmp_path / "bundle"))
    assert os.listdir(tmp_path) == []


def test_bert_wordpiece_workdir_exports(tmp_path, tokenizers):
    tok = load_tokenizer(tokenizers["wp_cased"])
    run = tmp_path / "run"
    write_workdir(
        run, tokenizers["wp_cased"],
        _config(tok, arch="bert", type_vocab_size=2, max_position_embeddings=64,
                layer_norm_eps=1e-12, hidden_size=40, num_heads=5))
    result = export(str(run), str(tmp_path / "bundle"))
    print(f"\nexport parity bert workdir: {result}")
    assert result["hf_class"] == "BertForMaskedLM" and result["logits_max_abs_diff"] <= TOL
    tcfg = json.loads((tmp_path / "bundle" / "tokenizer_config.json").read_text())
    assert (tcfg["tokenizer_class"], tcfg["do_lower_case"],
            tcfg["strip_accents"]) == ("BertTokenizer", False, False)
    from transformers import AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path / "bundle"))
    assert "à" in hf_tok.convert_tokens_to_string(hf_tok.tokenize("Città"))


def test_fewer_embedding_rows_than_tokens_is_refused(tmp_path, tokenizers):
    """More rows than tokens export as they are (tests/vocab/test_release_tokenizers.py)."""
    tok = load_tokenizer(tokenizers["sp"])
    run = tmp_path / "run"
    write_workdir(run, tokenizers["sp"], _config(tok, vocab_size=tok.vocab_size - 8, num_layers=1))
    with pytest.raises(FlaxlmError, match="tokenizer has 300 tokens but the model embeds only 292"):
        export(str(run), str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle").exists()


def test_head_dim_transformers_cannot_hold_is_refused(tmp_path, tokenizers):
    run = tmp_path / "run"
    write_workdir(run, tokenizers["sp"],
                  _config(load_tokenizer(tokenizers["sp"]), head_dim=16, num_layers=1))
    with pytest.raises(FlaxlmError, match="head_dim=16 × num_heads=4 != hidden_size=48"):
        export(str(run), str(tmp_path / "bundle"))
    assert not (tmp_path / "bundle").exists()


def test_cli_export_fill_mask_and_errors(sp_run, tmp_path, capsys):
    run, _ = sp_run
    bundle = tmp_path / "bundle"
    assert cli.main(["export", "--workdir", str(run), "--out", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "exported step 10 as XLMRobertaForMaskedLM" in out and "logits_max|Δ|=" in out

    results = fill_mask_demo(str(bundle), ["Il sistema <mask> è potente.", "Una <mask> completa."],
                             top_k=3)
    assert len(results) == 2 and all(len(r) == 3 for r in results)
    assert {"token_str", "score", "sequence", "token"} <= set(results[0][0])

    assert cli.main(["fill-mask", "--model", str(run), "--top-k", "2", "Il <mask> è."]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Il <mask> è." and len(lines) == 3

    assert cli.main(["export", "--workdir",
                     str(tmp_path / "nope"), "--out",
                     str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flaxlm: error: ") and "config.json" in err and "\n" not in err
    assert cli.main(["import", "--hf", str(run), "--out", str(tmp_path / "y")]) == 2
    assert "model_type None is not supported" in capsys.readouterr().err
    assert cli.main(["fill-mask", "--model", str(bundle), "no mask here"]) == 2

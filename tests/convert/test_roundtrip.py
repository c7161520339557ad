"""HF random model → import → parity with torch → export → every tensor bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from flaxlm.convert.commands import export, import_hf
from flaxlm.convert.mappings.tables import table_for
from flaxlm.convert.mappings.tensors import to_hf
from flaxlm.convert.parity import flax_outputs, torch_outputs
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.models.param_tree import flat_names
from tests.convert.conftest import (TOL, assert_same_weights, load_flax, make_hf_dir, random_batch,
                                    read_safetensors)

CASES = [
    # 12-dim heads (not 64), odd intermediate size, one token type, padding-offset positions
    pytest.param("xlmr", "sp", dict(hidden=48, heads=4, intermediate=37, type_vocab=1),
                 id="xlmr-h48x4-ff37-types1"),
    pytest.param("bert", "wp_uncased", dict(hidden=36, heads=3, intermediate=50, type_vocab=2),
                 id="bert-uncased-h36x3-ff50-types2"),
    pytest.param("bert", "wp_cased", dict(hidden=64, heads=2, intermediate=100, type_vocab=1),
                 id="bert-cased-h64x2-ff100-types1"),
]


@pytest.mark.parametrize("arch,tok_name,shape", CASES)
def test_import_parity_export_bitwise(tmp_path, tokenizers, arch, tok_name, shape):
    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    torch_model = make_hf_dir(hf_dir, arch, tokenizers[tok_name], **shape)

    imported = import_hf(str(hf_dir), str(run_dir))
    assert imported["logits_max_abs_diff"] <= TOL and imported["padding_tokens"] > 0

    # Independent of the import's own check: random ids, padded rows, random token types.
    config, _, model = load_flax(str(run_dir))
    tok = load_tokenizer(str(run_dir / "tokenizer"))
    batch = random_batch(config.vocab_size, tok.pad_id, tok.cls_id, shape["type_vocab"])
    f_out, t_out = flax_outputs(model, batch), torch_outputs(torch_model, batch)
    (f_hidden, f_logits), (t_hidden, t_logits) = ((out["hidden"], out["logits"])
                                                  for out in (f_out, t_out))
    hidden_diff = np.abs(f_hidden - t_hidden).max()
    logits_diff = np.abs(f_logits - t_logits).max()
    print(
        f"\nparity {arch} {shape}: random ids+types {batch['input_ids'].shape}: hidden "
        f"{hidden_diff:.2e} logits {logits_diff:.2e} (|logits| up to {np.abs(t_logits).max():.1f}); "
        f"import on text {imported['batch_shape']}: hidden {imported['hidden_max_abs_diff']:.2e} "
        f"logits {imported['logits_max_abs_diff']:.2e}")
    assert hidden_diff <= TOL and logits_diff <= TOL
    assert np.abs(t_logits).max() > 1.0  # a check on near-zero outputs would prove little

    exported = export(str(run_dir), str(bundle))
    assert exported["logits_max_abs_diff"] <= TOL
    assert_same_weights(hf_dir, bundle)

    cfg_in = json.loads((hf_dir / "config.json").read_text())
    cfg_out = json.loads((bundle / "config.json").read_text())
    for key in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "intermediate_size", "max_position_embeddings",
                "type_vocab_size", "pad_token_id", "layer_norm_eps", "hidden_act"):
        assert cfg_out[key] == cfg_in[key], key
    assert cfg_out["architectures"] == cfg_in["architectures"]


@pytest.mark.parametrize("arch,tok_name,prefix", [("xlmr", "sp", "roberta."),
                                                  ("bert", "wp_uncased", "bert.")])
def test_base_model_keeps_its_pooler_and_inits_the_mlm_head(tmp_path, tokenizers, caplog, arch,
                                                            tok_name, prefix):
    """An encoder-only checkpoint (with the pooler transformers' base classes have) round-trips
    every stored tensor, pooler included; the pooler matches transformers' `pooler_output`."""
    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    base = make_hf_dir(hf_dir, arch, tokenizers[tok_name], hidden=48, heads=4, intermediate=37,
                       type_vocab=2, with_head=False)
    with caplog.at_level("WARNING"):
        result = import_hf(str(hf_dir), str(run_dir))
    assert "no MLM head" in caplog.text and "pooler" not in caplog.text
    assert result["initialized_fresh"] and not result["dropped"]
    assert "logits_max_abs_diff" not in result
    assert result["hidden_max_abs_diff"] <= TOL and result["pooled_max_abs_diff"] <= TOL
    config, params, model = load_flax(str(run_dir))
    assert config.pooler
    np.testing.assert_array_equal(params["mlm_head"]["norm"]["scale"], 1.0)

    tok = load_tokenizer(str(run_dir / "tokenizer"))
    batch = random_batch(config.vocab_size, tok.pad_id, tok.cls_id, 2)
    f_pooled, t_pooled = flax_outputs(model, batch)["pooled"], torch_outputs(base, batch)["pooled"]
    assert np.abs(f_pooled - t_pooled).max() <= TOL
    assert np.abs(t_pooled).max() > 0.3  # tanh outputs far from zero: the check has teeth

    export(str(run_dir), str(bundle))
    original, released = read_safetensors(hf_dir / "model.safetensors"), read_safetensors(
        bundle / "model.safetensors")
    assert f"{prefix}pooler.dense.weight" in released and "pooler.dense.weight" in original
    for name, value in original.items():
        assert released[prefix + name].tobytes() == value.tobytes(), name
    assert {k
            for k in released
            if not k.startswith(prefix)} == {r.hf
                                             for r in table_for(arch, "mlm").head.rules}
    # The bundle's pooler is the one a base-model or sequence-classifier user gets.
    reloaded = getattr(transformers, type(base).__name__).from_pretrained(str(bundle)).eval()
    np.testing.assert_array_equal(torch_outputs(reloaded, batch)["pooled"], t_pooled)


def test_pytorch_bin_and_sharded_safetensors_import_identically(tmp_path, tokenizers):
    """`pytorch_model.bin` (weights only) and a 2-shard safetensors index give the same params."""
    from safetensors.torch import save_file

    hf_dir = tmp_path / "hf"
    model = make_hf_dir(hf_dir, "bert", tokenizers["wp_uncased"], hidden=48, heads=4,
                        intermediate=37, type_vocab=2)
    state = {k: v.contiguous() for k, v in read_safetensors_torch(hf_dir).items()}
    reference = read_safetensors(hf_dir / "model.safetensors")

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for f in hf_dir.iterdir():
        if f.name != "model.safetensors":
            (bin_dir / f.name).write_bytes(f.read_bytes())
    torch.save(state, bin_dir / "pytorch_model.bin")

    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    for f in bin_dir.iterdir():
        if f.name != "pytorch_model.bin":
            (shard_dir / f.name).write_bytes(f.read_bytes())
    names = sorted(state)
    halves = {
        "model-00001-of-00002.safetensors": names[:len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2:]
    }
    for shard, keys in halves.items():
        save_file({k: state[k] for k in keys}, shard_dir / shard, metadata={"format": "pt"})
    (shard_dir / "model.safetensors.index.json").write_text(
        json.dumps({
            "metadata": {},
            "weight_map": {
                k: s
                for s, ks in halves.items()
                for k in ks
            }
        }))

    for source in (bin_dir, shard_dir):
        run_dir = tmp_path / f"run-{source.name}"
        assert import_hf(str(source), str(run_dir))["logits_max_abs_diff"] <= TOL
        config, params, _ = load_flax(str(run_dir))
        back = to_hf(table_for("bert", "mlm"), flat_names(params), config)
        assert set(back) == set(reference)
        assert all(back[k].tobytes() == v.tobytes() for k, v in reference.items()), source
    del model


def read_safetensors_torch(hf_dir):
    from safetensors.torch import load_file

    return load_file(str(hf_dir / "model.safetensors"))

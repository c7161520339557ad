"""Token and sequence classifiers: random HF model → import → parity on the head's own logits →
export → every tensor bit for bit, for each (family, task) the tables list."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flaxlm.convert.commands import export, import_hf
from flaxlm.convert.parity import flax_outputs, torch_outputs
from flaxlm.data.tokenizers import load_tokenizer
from tests.convert.conftest import (TOL, assert_same_weights, load_flax, make_hf_dir, random_batch,
                                    read_safetensors)

SHAPE = dict(hidden=48, heads=4, intermediate=37, type_vocab=2)
CASES = [
    pytest.param("xlmr", "sp", "token_classification", (3, 17, 3), id="xlmr-token"),
    pytest.param("bert", "wp_cased", "token_classification", (3, 17, 3), id="bert-token"),
    pytest.param("xlmr", "sp", "sequence_classification", (3, 3), id="xlmr-sequence"),
    pytest.param("bert", "wp_uncased", "sequence_classification", (3, 3), id="bert-sequence"),
]


@pytest.mark.parametrize("arch,tok_name,task,logits_shape", CASES)
def test_classifier_import_parity_export_bitwise(tmp_path, tokenizers, arch, tok_name, task,
                                                 logits_shape):
    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    torch_model = make_hf_dir(hf_dir, arch, tokenizers[tok_name], task=task, num_labels=3, **SHAPE)
    imported = import_hf(str(hf_dir), str(run_dir))
    assert imported["head"] == task and not imported["initialized_fresh"]
    assert imported["logits_max_abs_diff"] <= TOL and imported["padding_tokens"] > 0

    # Independent of the import's own check: random ids, padded rows, random token types.
    config, _, model = load_flax(str(run_dir))
    assert (config.num_labels, config.pooler) == (3, task == "sequence_classification"
                                                  and arch == "bert")
    tok = load_tokenizer(str(run_dir / "tokenizer"))
    batch = random_batch(config.vocab_size, tok.pad_id, tok.cls_id, SHAPE["type_vocab"])
    f_logits, t_logits = flax_outputs(model, batch)["logits"], torch_outputs(torch_model,
                                                                             batch)["logits"]
    assert f_logits.shape == t_logits.shape == logits_shape
    diff = np.abs(f_logits - t_logits).max()
    print(f"\n{arch} {task}: logits max |Δ| {diff:.2e} (|logits| up to "
          f"{np.abs(t_logits).max():.2f})")
    assert diff <= TOL
    # A check on near-zero or input-independent outputs would prove little: ≥ 1000 × TOL.
    assert np.abs(t_logits).max() > 0.1 and np.abs(t_logits - t_logits[:1]).max() > 0.1

    exported = export(str(run_dir), str(bundle))
    assert exported["hf_class"] == type(torch_model).__name__
    assert exported["logits_max_abs_diff"] <= TOL
    assert_same_weights(hf_dir, bundle)

    cfg_in = json.loads((hf_dir / "config.json").read_text())
    cfg_out = json.loads((bundle / "config.json").read_text())
    assert cfg_out["architectures"] == cfg_in["architectures"]
    assert cfg_out["id2label"] == cfg_in["id2label"]
    card = (bundle / "README.md").read_text()
    pipeline = task.split("_")[0] + "-classification"
    assert f"pipeline_tag: {pipeline.replace('sequence', 'text')}" in card
    assert f'pipeline("{pipeline.replace("sequence", "text")}"' in card


def test_bert_sequence_classifier_without_pooler_is_refused_by_name(tmp_path, tokenizers):
    from safetensors.numpy import save_file

    from flaxlm.errors import FlaxlmError

    hf_dir = tmp_path / "hf"
    make_hf_dir(hf_dir, "bert", tokenizers["wp_uncased"], task="sequence_classification", **SHAPE)
    tensors = read_safetensors(hf_dir / "model.safetensors")
    save_file({
        k: v
        for k, v in tensors.items() if "pooler" not in k
    }, hf_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FlaxlmError, match="missing tensor bert.pooler.dense"):
        import_hf(str(hf_dir), str(tmp_path / "run"))

"""Checkpoints as releases ship them: embedding tables with rows the tokenizer never produces
(ELECTRA, DistilBERT), an ELECTRA discriminator without its generator, and every
`tokenizer_class` transformers writes for a supported family."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
from transformers import AutoTokenizer

from flaxlm.convert.electra import GENERATOR_SUBDIR
from flaxlm.convert.commands import export, import_hf
from flaxlm.convert.safe_load import TOKENIZER_CLASSES_BY_FAMILY
from flaxlm.convert.tokenizer_files import SAMPLE_TEXTS, import_tokenizer
from flaxlm.errors import FlaxlmError
from tests.conftest import REPO
from tests.convert.conftest import (TOL, assert_same_weights, load_flax, random_batch,
                                    read_safetensors, randomize_torch)
from tests.convert.test_electra_roundtrip import make_electra_pair

EXTRA_ROWS = 5


def test_electra_pair_with_extra_rows_roundtrips_bitwise(tmp_path, tokenizers):
    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    make_electra_pair(hf_dir, tokenizers["wp_cased"], extra_rows=EXTRA_ROWS)
    imported = import_hf(str(hf_dir), str(run_dir))
    assert imported["head"] == "electra" and imported["unused_rows"] == EXTRA_ROWS
    assert max(v for k, v in imported.items() if k.endswith("diff")) <= TOL
    export(str(run_dir), str(bundle))
    assert_same_weights(hf_dir, bundle)
    assert_same_weights(hf_dir / GENERATOR_SUBDIR, bundle / GENERATOR_SUBDIR)


def test_distilbert_with_extra_rows_and_its_own_tokenizer_class(tmp_path, tokenizers):
    """Saved by transformers as it saves DistilBERT (tokenizer_class "DistilBertTokenizer")."""
    import transformers

    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    tok = transformers.DistilBertTokenizer.from_pretrained(tokenizers["wp_cased"])
    config = transformers.DistilBertConfig(vocab_size=len(tok) + EXTRA_ROWS, dim=36, n_layers=2,
                                           n_heads=3, hidden_dim=50, max_position_embeddings=40,
                                           pad_token_id=tok.pad_token_id, activation="gelu")
    model = transformers.DistilBertForMaskedLM(config)
    randomize_torch(model)
    model.eval().save_pretrained(str(hf_dir))
    tok.save_pretrained(str(hf_dir))
    saved = json.loads((hf_dir / "tokenizer_config.json").read_text())["tokenizer_class"]
    assert saved == "DistilBertTokenizer"

    imported = import_hf(str(hf_dir), str(run_dir))
    assert imported["unused_rows"] == EXTRA_ROWS and imported["logits_max_abs_diff"] <= TOL
    export(str(run_dir), str(bundle))
    assert_same_weights(hf_dir, bundle)


def test_discriminator_alone_imports_for_fine_tuning_not_pre_training(tmp_path, tokenizers, caplog):
    """A released ElectraForPreTraining without its generator: the encoder imports (hidden states
    equal transformers' ElectraModel), its replaced-token head is named as dropped, and ELECTRA
    pre-training from the workdir is refused in one line that says to pass --generator."""
    import torch

    from flaxlm import run_config
    from flaxlm.convert.parity import flax_outputs
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.experiment import resolve_model

    hf_dir, run_dir = tmp_path / "hf", tmp_path / "run"
    disc, _ = make_electra_pair(hf_dir, tokenizers["wp_cased"])
    shutil.rmtree(hf_dir / GENERATOR_SUBDIR)
    with caplog.at_level(logging.WARNING):
        imported = import_hf(str(hf_dir), str(run_dir))
    assert "ELECTRA discriminator without its generator" in caplog.text
    assert "--generator DIR" in caplog.text
    assert (imported["arch"], imported["head"]) == ("electra", "mlm")
    assert imported["hidden_max_abs_diff"] <= TOL
    assert imported["dropped"] == sorted(k for k in read_safetensors(hf_dir / "model.safetensors")
                                         if k.startswith("discriminator_predictions."))
    run = json.loads((run_dir / "config.json").read_text())
    assert run["config"]["hf_class"] == "ElectraForPreTraining" and run["objective"] == "mlm"

    # What fine-tuning loads (`encoder/`) is the discriminator's encoder.
    config, params, model = load_flax(str(run_dir))
    tok = load_tokenizer(str(run_dir / "tokenizer"))
    batch = random_batch(config.vocab_size, tok.pad_id, tok.cls_id, 2)
    with torch.no_grad():
        want = disc.electra(**{
            k: torch.from_numpy(v.astype(np.int64))
            for k, v in batch.items()
        }).last_hidden_state.numpy()
    mask = batch["attention_mask"] == 1
    got = flax_outputs(model, batch)["hidden"]
    assert np.abs(got[mask] - want[mask]).max() <= TOL

    electra = run_config.load(os.path.join(REPO, "configs", "electra_tiny.py"),
                              [f"--config.init_from={run_dir}"])
    with pytest.raises(FlaxlmError) as refused:
        resolve_model(electra, tok)
    message = str(refused.value)
    assert "\n" not in message and "holds no ELECTRA generator" in message
    assert "(pass --generator)" in message

    # A --generator that does not exist is still the pair path's refusal.
    with pytest.raises(FlaxlmError, match="needs its generator"):
        import_hf(str(hf_dir), str(tmp_path / "pair"), generator_dir=str(tmp_path / "none"))


@pytest.mark.parametrize("family", sorted(set(TOKENIZER_CLASSES_BY_FAMILY) - {"any"}))
def test_every_tokenizer_class_transformers_writes_for_a_family_imports(
        tmp_path, tokenizers, family):
    """The family's tokenizer saved by transformers itself, then declared under each name of the
    table (transformers 4's slow and fast names, and the generic ones): each imports with the same
    ids as the saved tokenizer."""
    import transformers

    arch = "xlmr" if family == "xlmr" else "bert"
    source = tokenizers["sp"] if family == "xlmr" else tokenizers["wp_cased"]
    saved = tmp_path / "saved"
    cls = {
        "xlmr": "XLMRobertaTokenizer",
        "bert": "BertTokenizer",
        "distilbert": "DistilBertTokenizer",
        "electra": "ElectraTokenizer"
    }[family]
    reference = getattr(transformers, cls).from_pretrained(source)
    reference.save_pretrained(str(saved))
    expected = reference(list(SAMPLE_TEXTS), add_special_tokens=False)["input_ids"]
    for name in TOKENIZER_CLASSES_BY_FAMILY[family] + TOKENIZER_CLASSES_BY_FAMILY["any"]:
        declared = tmp_path / name
        shutil.copytree(saved, declared)
        config = json.loads((declared / "tokenizer_config.json").read_text())
        config["tokenizer_class"] = name
        (declared / "tokenizer_config.json").write_text(json.dumps(config))
        tok, hf_tok = import_tokenizer(str(declared), str(tmp_path / f"out_{name}"), arch,
                                       len(reference), 64)
        assert [ids.tolist() for ids, _ in tok.encode_batch(list(SAMPLE_TEXTS))] == expected, name
        assert len(AutoTokenizer.from_pretrained(str(declared))) == len(reference)


def test_unknown_tokenizer_class_is_refused(tmp_path, tokenizers):
    declared = tmp_path / "declared"
    shutil.copytree(tokenizers["wp_cased"], declared)
    config = json.loads((declared / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "RobertaTokenizer"
    (declared / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(FlaxlmError, match="tokenizer_class 'RobertaTokenizer' is not supported"):
        import_tokenizer(str(declared), str(tmp_path / "out"), "bert", 300, 64)

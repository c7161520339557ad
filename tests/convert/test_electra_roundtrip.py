"""ELECTRA pairs: random transformers ElectraForPreTraining + ElectraForMaskedLM with embedding
width ≠ hidden → flaxlm workdir (head "electra") → logit parity → export → every tensor of both
towers bit for bit, each tower loadable alone."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from flaxlm.convert.electra import GENERATOR_SUBDIR
from flaxlm.convert.commands import export, import_hf
from flaxlm.errors import FlaxlmError
from tests.convert.conftest import TOL, assert_same_weights, randomize_torch


def make_electra_pair(path, tokenizer_dir: str, *, seed: int = 0, tie: bool = True,
                      extra_rows: int = 0):
    """disc hidden 48 / gen hidden 16, embedding 24, 2 layers, odd FFN widths; the generator's
    embeddings are the discriminator's (ELECTRA shares them). `extra_rows`: embedding rows
    beyond the tokenizer's ids."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from flaxlm.data.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    common = dict(vocab_size=tok.vocab_size + extra_rows, embedding_size=24, num_hidden_layers=2,
                  max_position_embeddings=40, type_vocab_size=2, pad_token_id=tok.pad_id,
                  layer_norm_eps=1e-12)
    torch.manual_seed(seed)
    disc = transformers.ElectraForPreTraining(
        transformers.ElectraConfig(hidden_size=48, num_attention_heads=4, intermediate_size=37,
                                   **common))
    gen = transformers.ElectraForMaskedLM(
        transformers.ElectraConfig(hidden_size=16, num_attention_heads=2, intermediate_size=29,
                                   **common))
    randomize_torch(disc, seed)
    randomize_torch(gen, seed + 1)
    if tie:
        with torch.no_grad():
            for name, p in gen.electra.embeddings.named_parameters():
                p.copy_(dict(disc.electra.embeddings.named_parameters())[name])
    for model, where in ((disc, path), (gen, os.path.join(path, GENERATOR_SUBDIR))):
        model.eval().save_pretrained(str(where))
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(str(path))
    shutil.copyfile(os.path.join(tokenizer_dir, "vocab.txt"), os.path.join(path, "vocab.txt"))
    return disc, gen


def test_electra_pair_import_export_bitwise(tmp_path, tokenizers):
    import transformers

    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    make_electra_pair(hf_dir, tokenizers["wp_cased"])
    imported = import_hf(str(hf_dir), str(run_dir))
    assert imported["head"] == "electra"
    diffs = {k: v for k, v in imported.items() if k.endswith("diff")}
    assert set(diffs) == {
        f"{t}_{k}_max_abs_diff"
        for t in ("discriminator", "generator")
        for k in ("hidden", "logits")
    }
    assert max(diffs.values()) <= TOL and imported["padding_tokens"] > 0
    run = json.loads((run_dir / "config.json").read_text())
    assert (run["model"]["hidden_size"], run["model"]["embedding_size"],
            run["generator"]["hidden_size"]) == (48, 24, 16)

    exported = export(str(run_dir), str(bundle))
    assert max(v for k, v in exported.items() if k.endswith("diff")) <= TOL
    assert_same_weights(hf_dir, bundle)
    assert_same_weights(hf_dir / GENERATOR_SUBDIR, bundle / GENERATOR_SUBDIR)
    for sub, cls in (("", "ElectraForPreTraining"), (GENERATOR_SUBDIR, "ElectraForMaskedLM")):
        cfg = json.loads((bundle / sub / "config.json").read_text())
        assert cfg["architectures"] == [cls] and cfg["embedding_size"] == 24
        tok_cfg = json.loads((bundle / sub / "tokenizer_config.json").read_text())
        assert tok_cfg["strip_accents"] is False
        assert f"`{cls}`" in (bundle / sub / "README.md").read_text()
    # Each tower alone, as users load it.
    disc = transformers.ElectraForPreTraining.from_pretrained(str(bundle))
    gen = transformers.AutoModelForMaskedLM.from_pretrained(str(bundle / GENERATOR_SUBDIR))
    assert type(gen).__name__ == "ElectraForMaskedLM"
    assert disc.config.hidden_size == 48 and gen.config.hidden_size == 16
    assert np.array_equal(gen.generator_lm_head.weight.detach().numpy(),
                          disc.electra.embeddings.word_embeddings.weight.detach().numpy())


@pytest.mark.slow
def test_electra_pair_with_untied_embeddings_is_refused(tmp_path, tokenizers):
    hf_dir = tmp_path / "hf"
    make_electra_pair(hf_dir, tokenizers["wp_cased"], tie=False)
    with pytest.raises(FlaxlmError, match="differs from the discriminator's"):
        import_hf(str(hf_dir), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_trained_electra_workdir_exports_from_the_command_line(tmp_path):
    """configs/electra_tiny.py for 2 steps (embedding = hidden: no projection), then
    `flaxlm export`: both towers load with transformers, the tokenizer keeps accents."""
    import subprocess
    import sys

    import transformers

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    workdir, bundle = tmp_path / "run", tmp_path / "bundle"
    env = dict(os.environ, XLA_FLAGS="")
    subprocess.run([
        sys.executable, "-m", "flaxlm.cli", "train", "--config",
        os.path.join(repo, "configs", "electra_tiny.py"), "--workdir",
        str(workdir), "--config.train.steps=2", "--config.train.eval_every=0",
        "--config.train.batch_size=8"
    ], check=True, cwd=repo, env=env)
    out = subprocess.run([
        sys.executable, "-m", "flaxlm.cli", "export", "--workdir",
        str(workdir), "--out",
        str(bundle)
    ], check=True, cwd=repo, env=env, capture_output=True, text=True).stdout
    assert "ElectraForPreTraining" in out
    disc = transformers.AutoModelForPreTraining.from_pretrained(str(bundle))
    gen = transformers.AutoModelForMaskedLM.from_pretrained(str(bundle / GENERATOR_SUBDIR))
    assert (type(disc).__name__, type(gen).__name__) == ("ElectraForPreTraining",
                                                         "ElectraForMaskedLM")
    assert gen.config.hidden_size == disc.config.hidden_size // 2  # generator_hidden_fraction 0.5
    assert not hasattr(disc.electra, "embeddings_project")
    tok_cfg = json.loads((bundle / "tokenizer_config.json").read_text())
    assert tok_cfg["strip_accents"] is False


def make_electra_classifier(path, tokenizer_dir: str, task: str, *, seed: int = 0):
    """A random ElectraFor{Token,Sequence}Classification, embedding 24 ≠ hidden 48, 3 labels."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from flaxlm.convert.mappings.tables import table_for
    from flaxlm.data.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    config = transformers.ElectraConfig(vocab_size=tok.vocab_size, embedding_size=24,
                                        hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=37, max_position_embeddings=40,
                                        type_vocab_size=2, pad_token_id=tok.pad_id, num_labels=3)
    torch.manual_seed(seed)
    model = getattr(transformers, table_for("electra", task).hf_class)(config)
    randomize_torch(model, seed)
    model.eval().save_pretrained(str(path))
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(str(path))
    shutil.copyfile(os.path.join(tokenizer_dir, "vocab.txt"), os.path.join(path, "vocab.txt"))
    return model


@pytest.mark.parametrize("task,logits_shape", [
    pytest.param("sequence_classification", (3, 3), id="sequence"),
    pytest.param("token_classification", (3, 17, 3), id="token", marks=pytest.mark.slow),
])
def test_electra_classifier_import_parity_export_bitwise(tmp_path, tokenizers, task, logits_shape):
    from flaxlm.convert.parity import flax_outputs, torch_outputs
    from flaxlm.data.tokenizers import load_tokenizer
    from tests.convert.conftest import load_flax, random_batch

    hf_dir, run_dir, bundle = tmp_path / "hf", tmp_path / "run", tmp_path / "bundle"
    torch_model = make_electra_classifier(hf_dir, tokenizers["wp_cased"], task)
    imported = import_hf(str(hf_dir), str(run_dir))
    assert (imported["arch"], imported["head"]) == ("electra", task)
    assert imported["logits_max_abs_diff"] <= TOL

    config, _, model = load_flax(str(run_dir))
    assert (config.embedding_dim, config.hidden_size, config.pooler) == (24, 48, False)
    tok = load_tokenizer(str(run_dir / "tokenizer"))
    batch = random_batch(config.vocab_size, tok.pad_id, tok.cls_id, 2)
    f_logits = flax_outputs(model, batch)["logits"]
    t_logits = torch_outputs(torch_model, batch)["logits"]
    assert f_logits.shape == t_logits.shape == logits_shape
    assert np.abs(f_logits - t_logits).max() <= TOL
    assert np.abs(t_logits).max() > 0.1 and np.abs(t_logits - t_logits[:1]).max() > 0.1

    exported = export(str(run_dir), str(bundle))
    assert exported["hf_class"] == type(torch_model).__name__
    assert exported["logits_max_abs_diff"] <= TOL
    assert_same_weights(hf_dir, bundle)

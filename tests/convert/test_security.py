"""Hostile artifacts are refused with a clear message, run no code and write nothing outside."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from flaxlm.convert.fill_mask import fill_mask_demo
from flaxlm.convert.commands import import_hf
from flaxlm.errors import FlaxlmError
from tests.convert.conftest import make_hf_dir


class _CreatesDirectoryWhenUnpickled:
    """A pickle payload: loading it calls os.mkdir(path) — stands in for any code execution."""
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path, )


@pytest.fixture(scope="module")
def good_hf(tmp_path_factory, tokenizers):
    """A valid small BERT checkpoint that each test copies and then corrupts."""
    path = tmp_path_factory.mktemp("good") / "hf"
    make_hf_dir(path, "bert", tokenizers["wp_uncased"], hidden=32, heads=2, intermediate=40,
                type_vocab=2, layers=1)
    return path


@pytest.fixture
def arena(tmp_path, good_hf):
    """tmp/{hf (a copy of good_hf), secret.txt}; returns (hf, out, snapshot of tmp before)."""
    hf = tmp_path / "hf"
    shutil.copytree(good_hf, hf)
    (tmp_path / "secret.txt").write_text("do not read\n")

    def listing():
        return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))

    return hf, tmp_path / "run", listing


def _refused(arena, match: str):
    hf, out, listing = arena
    before = listing()
    with pytest.raises(FlaxlmError, match=match) as info:
        import_hf(str(hf), str(out))
    print(f"\nrefused: {info.value}")
    assert not out.exists()
    assert listing() == before, "the failed import left files behind"
    return str(info.value)


def test_pickle_with_code_is_refused_and_never_runs(arena, tmp_path):
    hf, _, _ = arena
    state = {k: v for k, v in _safetensors(hf).items()}
    os.remove(hf / "model.safetensors")
    marker = tmp_path / "pwned_by_import"
    state["bert.embeddings.word_embeddings.weight"] = _CreatesDirectoryWhenUnpickled(str(marker))
    torch.save(state, hf / "pytorch_model.bin")

    message = _refused(arena, "weights_only=True")
    assert "safetensors" in message
    assert not marker.exists(), "the pickle payload ran"

    # Control: the payload is real — an unsafe load does execute it.
    control = tmp_path / "pwned_by_unsafe_load"
    torch.save({"x": _CreatesDirectoryWhenUnpickled(str(control))}, tmp_path / "control.bin")
    torch.load(tmp_path / "control.bin", weights_only=False)
    assert control.is_dir()


@pytest.mark.parametrize("shard", ["../../outside.safetensors", "/etc/passwd"])
def test_index_naming_a_file_outside_is_refused(arena, tmp_path, shard):
    hf, _, _ = arena
    # The target exists, so only confinement can stop it.
    outside = tmp_path.parent / "outside.safetensors"
    shutil.copyfile(hf / "model.safetensors", outside)
    try:
        names = list(_safetensors(hf))
        os.remove(hf / "model.safetensors")
        (hf / "model.safetensors.index.json").write_text(
            json.dumps({"weight_map": {
                n: shard
                for n in names
            }}))
        _refused(arena, "points outside")
    finally:
        outside.unlink()


def test_tokenizer_config_pointing_outside_is_refused(arena):
    hf, _, _ = arena
    cfg = json.loads((hf / "tokenizer_config.json").read_text())
    cfg["vocab_file"] = "../secret.txt"
    (hf / "tokenizer_config.json").write_text(json.dumps(cfg))
    _refused(arena, r"tokenizer_config.json: key 'vocab_file'.*outside")


def test_symlinked_weights_pointing_outside_are_refused(arena, tmp_path):
    hf, _, _ = arena
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(hf / "model.safetensors", outside)
    os.symlink(outside, hf / "model.safetensors")
    _refused(arena, "outside .*symlink")


def test_symlink_inside_the_directory_is_fine(arena, tmp_path):
    hf, out, _ = arena
    os.rename(hf / "model.safetensors", hf / "weights.bin.safetensors")
    os.symlink("weights.bin.safetensors", hf / "model.safetensors")
    assert import_hf(str(hf), str(out))["logits_max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("edit,match", [
    ({
        "model_type": "evil-net"
    }, "model_type 'evil-net' is not supported"),
    ({
        "architectures": ["BertForQuestionAnswering"]
    }, "architecture 'BertForQuestionAnswering' is not supported"),
    ({
        "auto_map": {
            "AutoModel": "modeling_evil.EvilModel"
        }
    }, "custom model code"),
    ({
        "hidden_act": "relu"
    }, "hidden_act='relu' is not supported"),
    ({
        "position_embedding_type": "relative_key"
    }, "position_embedding_type"),
    ({
        "hidden_size": "32"
    }, "BertConfig refuses it: .*'hidden_size' expected int"),
])
def test_config_json_is_data_and_unknowns_are_refused(arena, edit, match):
    hf, _, _ = arena
    cfg = json.loads((hf / "config.json").read_text())
    cfg.update(edit)
    (hf / "config.json").write_text(json.dumps(cfg))
    _refused(arena, match)


def test_tokenizer_custom_code_is_refused(arena):
    hf, _, _ = arena
    cfg = json.loads((hf / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (hf / "tokenizer_config.json").write_text(json.dumps(cfg))
    _refused(arena, "custom tokenizer code")


@pytest.mark.parametrize("tokenizer_class", ["PreTrainedTokenizerFast", "TokenizersBackend"])
def test_tokenizer_json_only_classes_are_accepted(arena, tokenizer_class):
    # Hub repositories with only tokenizer.json declare transformers' generic fast class; the
    # name selects a transformers class, the file is parsed as JSON, nothing is imported.
    from transformers import AutoTokenizer

    from flaxlm.convert.tokenizer_files import SAMPLE_TEXTS
    from flaxlm.data.tokenizers import load_tokenizer

    hf, out, _ = arena
    cfg = json.loads((hf / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = tokenizer_class
    (hf / "tokenizer_config.json").write_text(json.dumps(cfg))
    (hf / "vocab.txt").unlink()
    hf_tok = AutoTokenizer.from_pretrained(str(hf))
    assert type(hf_tok).__module__.startswith("transformers.")
    import_hf(str(hf), str(out))
    tok = load_tokenizer(str(out / "tokenizer"))
    ours = [ids.tolist() for ids, _ in tok.encode_batch(list(SAMPLE_TEXTS))]
    assert ours == hf_tok(list(SAMPLE_TEXTS), add_special_tokens=False)["input_ids"]


def test_unknown_tokenizer_class_is_refused(arena):
    hf, _, _ = arena
    cfg = json.loads((hf / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "EvilTokenizer"
    (hf / "tokenizer_config.json").write_text(json.dumps(cfg))
    _refused(arena, "tokenizer_class 'EvilTokenizer' is not supported")


def test_shape_missing_and_extra_tensors_are_named(arena):
    from safetensors.numpy import save_file

    hf, _, _ = arena
    good = _safetensors(hf, numpy=True)
    name = "bert.encoder.layer.0.intermediate.dense.weight"

    save_file({**good, name: good[name][:, :-1]}, hf / "model.safetensors")
    _refused(arena, rf"tensor {name} has shape \(40, 31\), but config.json implies \(40, 32\)")

    save_file({k: v for k, v in good.items() if k != name}, hf / "model.safetensors")
    _refused(arena, f"missing tensor {name}")

    save_file({**good, "bert.encoder.layer.0.adapter.weight": good[name]}, hf / "model.safetensors")
    _refused(arena, "unexpected tensor bert.encoder.layer.0.adapter.weight")

    untied = good["bert.embeddings.word_embeddings.weight"] + 1
    save_file({**good, "cls.predictions.decoder.weight": untied}, hf / "model.safetensors")
    _refused(arena, "cls.predictions.decoder.weight differs")


def test_fill_mask_refuses_hostile_dir_before_transformers_reads_it(arena):
    hf, _, _ = arena
    cfg = json.loads((hf / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForMaskedLM": "modeling_evil.Evil"}
    (hf / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FlaxlmError, match="custom model code"):
        fill_mask_demo(str(hf), ["a [MASK] b"])


def _safetensors(hf, numpy: bool = False):
    if numpy:
        from safetensors.numpy import load_file
    else:
        from safetensors.torch import load_file
    return load_file(str(hf / "model.safetensors"))

"""Shared fixtures: tiny tokenizers trained on the Italian sample, random HF models, workdirs."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil

import numpy as np
import pytest

from tests.conftest import IT_TRAIN

TOL = 1e-4


@pytest.fixture(scope="session")
def tokenizers(tmp_path_factory) -> dict[str, str]:
    """Tokenizer dirs: "sp" (unigram, XLM-R ids), "wp_uncased" (lowercase + strip accents),
    "wp_cased" (keeps case and accents)."""
    from flaxlm.data.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("tokenizers")
    corpus = root / "corpus.txt"
    with open(IT_TRAIN, encoding="utf-8") as f:
        corpus.write_text("".join(itertools.islice(f, 1500)), encoding="utf-8")
    dirs = {"sp": root / "sp", "wp_uncased": root / "wp_uncased", "wp_cased": root / "wp_cased"}
    train_tokenizer([str(corpus)], vocab_size=300, kind="unigram", out_dir=str(dirs["sp"]))
    train_tokenizer([str(corpus)], vocab_size=300, kind="wordpiece",
                    out_dir=str(dirs["wp_uncased"]), lowercase=True, strip_accents=True)
    train_tokenizer([str(corpus)], vocab_size=300, kind="wordpiece", out_dir=str(dirs["wp_cased"]),
                    lowercase=False, strip_accents=False)
    return {k: str(v) for k, v in dirs.items()}


def randomize_torch(model, seed: int = 0, scale: float = 0.1) -> None:
    """Noise on every parameter, so zero biases and unit LayerNorms cannot hide a mapping bug."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def make_hf_dir(path, arch: str, tokenizer_dir: str, *, hidden: int, heads: int, intermediate: int,
                type_vocab: int, layers: int = 2, max_pos: int = 40, with_head: bool = True,
                task: str = "mlm", num_labels: int = 3, seed: int = 0, extra_rows: int = 0):
    """A random transformers model + the tokenizer files a real checkpoint carries; returns it.
    `with_head=False` saves the family's base model (with its pooler); otherwise the class of
    (arch, task) from the conversion tables. `extra_rows`: embedding rows beyond the tokenizer's
    ids, as multilingual-e5-small and mMiniLMv2 ship them."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from flaxlm.convert.mappings.tables import FAMILIES, table_for
    from flaxlm.data.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    common = dict(vocab_size=tok.vocab_size + extra_rows, hidden_size=hidden,
                  num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=intermediate, max_position_embeddings=max_pos,
                  type_vocab_size=type_vocab, pad_token_id=tok.pad_id, hidden_act="gelu")
    if with_head and task != "mlm":
        common["num_labels"] = num_labels
    if arch == "xlmr":
        config = transformers.XLMRobertaConfig(layer_norm_eps=1e-5, **common)
        source = "sentencepiece.bpe.model"
    else:
        config = transformers.BertConfig(layer_norm_eps=1e-12, **common)
        source = "vocab.txt"
    cls_name = table_for(arch, task).hf_class if with_head else FAMILIES[arch].base_class
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config)
    randomize_torch(model, seed)
    model.eval()
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(str(path))
    shutil.copyfile(os.path.join(tokenizer_dir, source), os.path.join(path, source))
    return model


def random_batch(vocab: int, pad_id: int, cls_id: int, type_vocab: int, seed: int = 0,
                 batch: int = 3, length: int = 17) -> dict[str, np.ndarray]:
    """Random ids with padded rows and (when the model has them) random token types."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, vocab, (batch, length)).astype(np.int32)
    ids[:, 0] = cls_id
    mask = np.ones_like(ids)
    for row, real in enumerate([length, 9, 4][:batch]):
        ids[row, real:] = pad_id
        mask[row, real:] = 0
    types = rng.integers(0, type_vocab, ids.shape).astype(np.int32) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def load_flax(run_dir: str, step: int | None = None):
    from flaxlm.convert.model_io import abstract_params, build_model
    from flaxlm.run.checkpoint import read_params
    from flaxlm.run.workdir import Workdir

    wd = Workdir.open(run_dir)
    params, _, _ = read_params(run_dir, abstract_params(wd.model, wd.head)[1], step)
    return wd.model, params, build_model(wd.model, params, wd.head)


def read_safetensors(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def assert_same_weights(hf_dir, bundle) -> None:
    """The bundle stores exactly the checkpoint's tensors, each fp32 and bit for bit equal."""
    original = read_safetensors(os.path.join(hf_dir, "model.safetensors"))
    released = read_safetensors(os.path.join(bundle, "model.safetensors"))
    assert set(original) == set(released)
    for name, value in original.items():
        assert released[name].dtype == value.dtype == np.float32, name
        assert released[name].tobytes() == value.tobytes(), name


def write_workdir(path, tokenizer_dir: str, config, steps=(10, ), seed: int = 0,
                  metrics: list[dict] | None = None) -> dict[int, dict]:
    """A flaxlm workdir as `flaxlm train` leaves it (params-only checkpoints); returns params."""
    from flaxlm.convert.model_io import abstract_params
    from flaxlm.models.param_tree import flat_names, unflatten_like
    from flaxlm.run.checkpoint import write_params

    os.makedirs(path, exist_ok=True)
    shutil.copytree(tokenizer_dir, os.path.join(path, "tokenizer"))
    model_dict = dataclasses.asdict(config)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "config": {
                    "data": {
                        "train_files": "data/it/train.txt"
                    }
                },
                "model": model_dict,
                "objective": "mlm",
                "tokenizer": "tokenizer"
            }, f)
    _, abstract = abstract_params(config)
    out = {}
    for i, step in enumerate(steps):
        rng = np.random.default_rng(seed + i)
        # Trained-looking weights (numpy: no per-shape init compiles): no zero biases or unit
        # LayerNorms to hide mapping bugs.
        flat = {
            name: (rng.normal(0, 0.1, a.shape) + name.endswith("norm/scale")).astype(np.float32)
            for name, a in flat_names(abstract).items()
        }
        params = unflatten_like(abstract, flat)
        write_params(str(path), step, params, {"step": step, "model": model_dict})
        out[step] = params
    if metrics:
        with open(os.path.join(path, "metrics.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(m) + "\n" for m in metrics)
    return out

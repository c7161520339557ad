"""Reading untrusted Hugging Face artifacts: data only, never code, never outside the directory.

* JSON files are parsed as data (size-capped); `auto_map` (custom code) is refused.
* Weights: `model.safetensors` (or its sharded index) is preferred; `pytorch_model.bin` is read
  only with `torch.load(weights_only=True)`, and anything that loader refuses becomes a
  `FlaxlmError` suggesting conversion to safetensors.
* Every file name an artifact mentions (shards in an index, tokenizer files in
  tokenizer_config.json) and every symlink inside the directory must resolve inside it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from flaxlm.convert.hf_config import table_for_config
from flaxlm.errors import FlaxlmError

MAX_JSON_BYTES = 64 << 20
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# The `tokenizer_class` names transformers writes for each supported family: its slow and fast
# classes (transformers 4 wrote either; 5 writes the first, and saves ELECTRA's as BertTokenizer),
# and for any family the generic PreTrainedTokenizerFast / TokenizersBackend (its transformers 5
# name) that repositories shipping only tokenizer.json declare. Only transformers' own classes:
# the name is looked up among them, never imported from the directory; import then checks the
# loaded tokenizer against flaxlm's ids like any other.
TOKENIZER_CLASSES_BY_FAMILY = {
    "xlmr": ("XLMRobertaTokenizer", "XLMRobertaTokenizerFast"),
    "bert": ("BertTokenizer", "BertTokenizerFast"),
    "distilbert": ("DistilBertTokenizer", "DistilBertTokenizerFast"),
    "electra": ("ElectraTokenizer", "ElectraTokenizerFast"),
    "any": ("PreTrainedTokenizerFast", "TokenizersBackend"),
}
TOKENIZER_CLASSES = tuple(c for names in TOKENIZER_CLASSES_BY_FAMILY.values() for c in names)


def confined(root: str, name: Any, what: str) -> str:
    """The real path of `name` inside `root`; refuses absolute names, `..` and escaping links."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise FlaxlmError(f"{what}: {name!r} is not a file name")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith("~") or ".." in parts or ":" in parts[0]:
        raise FlaxlmError(f"{what}: {name!r} points outside {root}; refused")
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root_real, name))
    if os.path.commonpath([root_real, real]) != root_real:
        raise FlaxlmError(f"{what}: {name!r} resolves to {real}, outside {root} (symlink); refused")
    return real


def check_links(root: str) -> None:
    """Refuses any symlink under `root` that leads outside it (weights, vocab, configs alike)."""
    root_real = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root_real):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                confined(root_real, os.path.relpath(path, root_real), f"{root}")


def read_json(root: str, name: str, what: str | None = None) -> dict:
    path = confined(root, name, what or os.path.join(root, name))
    source = os.path.join(root, name)
    if not os.path.isfile(path):
        raise FlaxlmError(f"{source}: not found")
    if os.path.getsize(path) > MAX_JSON_BYTES:
        raise FlaxlmError(f"{source}: larger than {MAX_JSON_BYTES >> 20} MiB; refused")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FlaxlmError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise FlaxlmError(f"{source}: expected a JSON object")
    return data


def check_tokenizer_config(root: str) -> dict:
    """tokenizer_config.json as data: no custom code, known class, file names inside `root`."""
    if not os.path.exists(os.path.join(root, "tokenizer_config.json")):
        return {}
    source = os.path.join(root, "tokenizer_config.json")
    cfg = read_json(root, "tokenizer_config.json")
    if "auto_map" in cfg:
        raise FlaxlmError(f"{source}: 'auto_map' asks for custom tokenizer code; refused "
                          "(flaxlm never uses trust_remote_code)")
    cls = cfg.get("tokenizer_class")
    if cls is not None and cls not in TOKENIZER_CLASSES:
        raise FlaxlmError(f"{source}: tokenizer_class {cls!r} is not supported (supported: "
                          f"{', '.join(TOKENIZER_CLASSES)})")
    for key, value in cfg.items():
        if key.endswith("_file") and value is not None:
            confined(root, value, f"{source}: key {key!r}")
    return cfg


def check_hf_dir(hf_dir: str) -> dict:
    """Everything that must hold before any HF library reads `hf_dir`; returns config.json."""
    if not os.path.isdir(hf_dir):
        raise FlaxlmError(f"{hf_dir}: not a directory")
    check_links(hf_dir)
    config = read_json(hf_dir, "config.json")
    table_for_config(config, os.path.join(hf_dir, "config.json"))
    check_tokenizer_config(hf_dir)
    weight_files(hf_dir)
    return config


def _index_shards(hf_dir: str, index_name: str) -> tuple[list[str], dict[str, str]]:
    index = read_json(hf_dir, index_name)
    weight_map = index.get("weight_map")
    source = os.path.join(hf_dir, index_name)
    if not isinstance(weight_map, dict) or not weight_map:
        raise FlaxlmError(f"{source}: no 'weight_map' object")
    shards: dict[str, str] = {}
    for tensor, shard in weight_map.items():
        if shard not in shards:
            shards[shard] = confined(hf_dir, shard, f"{source}: shard of {tensor}")
            if not os.path.isfile(shards[shard]):
                raise FlaxlmError(f"{source}: shard {shard!r} (for {tensor}) not found")
    return list(shards.values()), {t: shards[s] for t, s in weight_map.items()}


def weight_files(hf_dir: str) -> tuple[str, list[str], dict[str, str] | None]:
    """(format, files, tensor→file map of an index or None); safetensors win over pickles."""
    for fmt, single, index in (("safetensors", SAFETENSORS, SAFETENSORS_INDEX), ("torch", TORCH_BIN,
                                                                                 TORCH_BIN_INDEX)):
        if os.path.lexists(os.path.join(hf_dir, single)):
            return fmt, [confined(hf_dir, single, os.path.join(hf_dir, single))], None
        if os.path.lexists(os.path.join(hf_dir, index)):
            files, by_tensor = _index_shards(hf_dir, index)
            return fmt, files, by_tensor
    raise FlaxlmError(f"{hf_dir}: no {SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN} or "
                      f"{TORCH_BIN_INDEX}")


def _to_numpy(name: str, tensor) -> np.ndarray:
    import torch  # seconds to import: only when a checkpoint is read

    if not isinstance(tensor, torch.Tensor):
        raise FlaxlmError(f"checkpoint entry {name!r} is a {type(tensor).__name__}, not a tensor")
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype != torch.float32:
        tensor = tensor.float()  # bf16/fp16 widen exactly; fp32 stays bit-identical
    return tensor.contiguous().numpy()


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        with safe_open(path, framework="pt") as f:
            return {k: _to_numpy(k, f.get_tensor(k)) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise FlaxlmError(f"{path}: not a readable safetensors file ({e})") from None


def _load_torch_bin(path: str) -> dict[str, np.ndarray]:
    import torch  # seconds to import: only for a pytorch_model.bin

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError,
            EOFError) as e:
        found = re.search(r"(?i)unsupported:? global:? (?:GLOBAL )?([\w.]+)", str(e))
        why = (f"the pickle references {found.group(1)}"
               if found else f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}")
        raise FlaxlmError(
            f"{path}: refused by torch.load(weights_only=True): {why}. The file holds more than "
            "tensors (custom classes or code in the pickle). If you trust its source, convert it "
            "to model.safetensors in a sandbox and import that instead") from None
    if not isinstance(state, dict):
        raise FlaxlmError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return {str(k): _to_numpy(str(k), v) for k, v in state.items()}


def load_tensors(hf_dir: str) -> dict[str, np.ndarray]:
    """All tensors of an HF checkpoint directory (single file or sharded), as numpy."""
    fmt, files, by_tensor = weight_files(hf_dir)
    load = _load_safetensors if fmt == "safetensors" else _load_torch_bin
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        for name, value in load(path).items():
            if name in tensors:
                raise FlaxlmError(f"{path}: tensor {name} also appears in another shard")
            if by_tensor is not None and by_tensor.get(name) != path:
                raise FlaxlmError(f"{path}: holds tensor {name}, which the index does not place "
                                  "in this shard")
            tensors[name] = value
    if by_tensor is not None:
        absent = sorted(set(by_tensor) - set(tensors))
        if absent:
            raise FlaxlmError(f"{hf_dir}: index names tensor {absent[0]}, but its shard lacks it")
    return tensors

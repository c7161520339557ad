"""HF `config.json` ↔ flaxlm `ModelConfig`, read through transformers' own config classes.

`config.json` is first checked as plain data (no custom code, a known `model_type` and class), then
built into the family's transformers config class (`BertConfig.from_dict`, ...), so a field the file
omits gets exactly the default transformers would use when it builds the PyTorch model. Only what
flaxlm's encoder computes is accepted: exact GELU, absolute positions, no decoder or
cross-attention. Anything else is refused by name rather than imported into a model that would
compute something different. Each family's translation lives beside its conversion table
(`mappings/<family>.py`, `Family.read_config` / `write_config`); this module checks the file and
dispatches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flaxlm.convert.mappings.rules import Family
from flaxlm.convert.mappings.tables import FAMILIES, HEADS, Table, table_for, table_for_class
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig

BY_MODEL_TYPE: dict[str, Family] = {f.model_type: f for f in FAMILIES.values()}
# Loading choices that are ours, not the checkpoint's: fp32 and the default attention kernel.
_LOADING_KEYS = ("dtype", "torch_dtype", "attn_implementation")


@dataclasses.dataclass(frozen=True)
class HfModelConfig:
    model: ModelConfig
    table: Table
    is_base: bool  # an encoder-only class (`BertModel`): the MLM head is initialized fresh
    hf: Any  # the transformers config object
    labels: list[str]  # classifier label names, id order


def table_for_config(cfg: dict, source: str) -> tuple[Table, bool]:
    """The (family, task) table for an HF config, and whether it names the family's base class."""
    if not isinstance(cfg, dict):
        raise FlaxlmError(f"{source}: expected a JSON object")
    if "auto_map" in cfg:
        raise FlaxlmError(f"{source}: 'auto_map' asks for custom model code; flaxlm never runs "
                          "code from a checkpoint (no trust_remote_code)")
    model_type = cfg.get("model_type")
    if model_type not in BY_MODEL_TYPE:
        raise FlaxlmError(f"{source}: model_type {model_type!r} is not supported (supported: "
                          f"{', '.join(sorted(BY_MODEL_TYPE))})")
    family = BY_MODEL_TYPE[model_type]
    architectures = cfg.get("architectures") or [family.base_class]
    if not isinstance(architectures, list) or len(architectures) != 1:
        raise FlaxlmError(f"{source}: 'architectures' must name one class, got {architectures!r}")
    found = table_for_class(model_type, architectures[0])
    if found is None:
        known = [family.base_class
                 ] + [h.hf_class for (a, _), h in HEADS.items() if a == family.arch]
        raise FlaxlmError(f"{source}: architecture {architectures[0]!r} is not supported for "
                          f"model_type {model_type!r} (supported: {', '.join(known)})")
    return found


def transformers_config(family: Family, cfg: dict, source: str):
    """`cfg` built into the family's transformers config class, as `from_pretrained` would."""
    import transformers  # seconds to import: only when a config is read

    config_class = getattr(transformers, family.config_class)
    fields = {k: v for k, v in cfg.items() if k not in _LOADING_KEYS and not k.startswith("_")}
    try:
        return config_class.from_dict(fields)
    except Exception as e:  # transformers' strict dataclass checks raise their own types
        reason = " ".join(str(e).split())
        raise FlaxlmError(f"{source}: {family.config_class} refuses it: {reason}") from None


def read_model_config(table: Table, hf, source: str) -> ModelConfig:
    """The flaxlm config of a transformers config of `table`'s class (the family's translation)."""
    return table.family.read_config(hf, source, table.family, table.task, table.hf_class)


def model_config_from_hf(cfg: dict, source: str) -> HfModelConfig:
    table, is_base = table_for_config(cfg, source)
    hf = transformers_config(table.family, cfg, source)
    config = read_model_config(table, hf, source)
    labels = [str(hf.id2label[i]) for i in range(config.num_labels)]
    return HfModelConfig(config, table, is_base, hf, labels)


def hf_config(config: ModelConfig, task: str = "mlm", *, bos_id: int | None = None,
              eos_id: int | None = None, labels: list[str] | None = None):
    """The transformers config object of the (family, task) class for a flaxlm model."""
    return write_hf_config(table_for(config.arch, task), config, labels=labels, bos_id=bos_id,
                           eos_id=eos_id)


def write_hf_config(table: Table, config: ModelConfig, *, labels: list[str] | None = None,
                    bos_id: int | None = None, eos_id: int | None = None):
    """The transformers config object of `table`'s class for `config` (the family's
    translation)."""
    return table.family.write_config(config, table.family, table.task, table.hf_class, labels,
                                     bos_id, eos_id)

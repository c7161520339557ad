"""The objective registry and the `objective` config section each objective contributes to.

`config.objective.name` picks the objective; `config.objective.<name>.*` holds the fields of its
config dataclass (`objective.mlm.mask_rate`, ...). A new recipe registers its class here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from flaxlm.errors import FlaxlmError
from flaxlm.objectives import finetune_config
from flaxlm.objectives.distill_bert import DistilBert
from flaxlm.objectives.distill_minilm import MiniLMv2
from flaxlm.objectives.electra import Electra
from flaxlm.objectives.mlm import MaskedLM
from flaxlm.objectives.sequence import SequenceClassification
from flaxlm.objectives.token_classification import TokenClassification
from flaxlm.run.protocol import Objective

OBJECTIVES: dict[str, type] = {
    cls.name: cls
    for cls in (MaskedLM, SequenceClassification, TokenClassification, Electra, MiniLMv2,
                DistilBert)
}

# Keys that moved into the objective section: config files and overrides that still use them are
# told where they went.
MOVED_KEYS = {
    "data.mask_rate": "objective.mlm.mask_rate",
    "data.mask_token_rate": "objective.mlm.mask_token_rate",
    "data.random_token_rate": "objective.mlm.random_token_rate",
    "data.max_predictions": "objective.mlm.max_predictions",
    # Shared by the fine-tuning objectives (flaxlm/objectives/finetune_config.py).
    **{
        f"objective.{name}.{key}": f"finetune.{key}"
        for name in ("token_classification", "sequence_classification")
        for key in finetune_config.OBJECTIVE_FIELDS
    },
}


def config_section() -> ml_collections.ConfigDict:
    """`objective.name` plus one sub-section of defaults per registered objective."""
    section = ml_collections.ConfigDict()
    section.name = "mlm"
    for name, cls in OBJECTIVES.items():
        section[name] = ml_collections.ConfigDict({
            k: v
            for k, v in dataclasses.asdict(cls.Config()).items()
            if k not in finetune_config.OBJECTIVE_FIELDS
        })  # set by the `finetune` section
    return section


def make_objective(name: str, sections: Mapping[str, Any]) -> Objective:
    """The objective `name`, configured from its section of `config.objective`."""
    if name not in OBJECTIVES:
        raise FlaxlmError(f"objective.name={name!r} is not a known objective "
                          f"(known: {', '.join(sorted(OBJECTIVES))})")
    cls = OBJECTIVES[name]
    return cls(cls.Config(**dict(sections.get(name, {}))))


def with_finetune(name: str, sections: Mapping[str, Any],
                  finetune: Mapping[str, Any]) -> dict[str, dict]:
    """`sections` with the `finetune.*` settings the objective `name` takes added to its own."""
    sections = {k: dict(v) for k, v in sections.items()}
    if name in OBJECTIVES:
        sections[name] = {
            **sections.get(name, {}),
            **finetune_config.objective_fields(OBJECTIVES[name].Config, finetune, name)
        }
    return sections

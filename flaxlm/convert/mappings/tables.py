"""The conversion tables, assembled from one module per model family, and their lookups.

A transformers class is a (family, task) pair: `FAMILIES` holds each family's body, `TASKS` what
each flaxlm head is for, `HEADS` each (family, task)'s head rows.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from flaxlm.convert.mappings import bert, distilbert, electra
from flaxlm.convert.mappings.rules import Family, Head, Rule, Task
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig

FAMILIES: dict[str, Family] = {
    f.arch: f
    for f in (*bert.FAMILIES, distilbert.FAMILY, electra.FAMILY)
}

TASKS: dict[str, Task] = {
    "mlm": Task("AutoModelForMaskedLM", "fill-mask", "mlm_head/"),
    "token_classification": Task("AutoModelForTokenClassification", "token-classification",
                                 "classifier/"),
    "sequence_classification": Task("AutoModelForSequenceClassification", "text-classification",
                                    "classifier/"),
    **electra.TASKS,
}

HEADS: dict[tuple[str, str], Head] = {**bert.HEADS, **distilbert.HEADS, **electra.HEADS}


@dataclasses.dataclass(frozen=True)
class Table:
    """A (family, task) pair: everything conversion knows about one transformers class."""

    family: Family
    task: str
    head: Head

    @property
    def arch(self) -> str:
        return self.family.arch

    @property
    def hf_class(self) -> str:
        return self.head.hf_class

    @property
    def head_prefix(self) -> str:
        return TASKS[self.task].head_prefix

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self.family.body + self.head.rules

    @property
    def aliases(self) -> Mapping[str, str]:
        return self.head.aliases

    @property
    def ignored(self) -> tuple[str, ...]:
        return self.family.ignored

    def passengers(self, config: ModelConfig) -> list[str]:
        """HF names written to the checkpoint that this class does not load (see `holds_pooler`)."""
        pooler = [r.hf for r in expand(self, config) if r.flax.startswith("encoder/pooler/")]
        return [] if self.head.holds_pooler else pooler


def table_for(arch: str, task: str = "mlm") -> Table:
    if arch not in FAMILIES:
        raise FlaxlmError(f"no Hugging Face mapping for flaxlm arch {arch!r} "
                          f"(supported: {', '.join(sorted(FAMILIES))})")
    if (arch, task) not in HEADS:
        known = sorted(t for a, t in HEADS if a == arch)
        raise FlaxlmError(f"no Hugging Face mapping for the {task!r} head of arch {arch!r} "
                          f"(supported: {', '.join(known)})")
    return Table(FAMILIES[arch], task, HEADS[(arch, task)])


def table_for_class(model_type: str, hf_class: str) -> tuple[Table, bool] | None:
    """(table, is_base) for a transformers class name of a model_type; None if unknown. A base
    model (`BertModel`) maps to the family's MLM table with the head to be initialized fresh."""
    for family in FAMILIES.values():
        if family.model_type != model_type:
            continue
        if hf_class == family.base_class:
            return table_for(family.arch, "mlm"), True
        for (arch, task), head in HEADS.items():
            if arch == family.arch and head.hf_class == hf_class:
                return table_for(arch, task), False
    return None


def expand(table: Table, config: ModelConfig) -> list[Rule]:
    """The rows this config has, with `{i}` spelled out for every layer."""
    rows = []
    for rule in table.rules:
        if rule.when is not None and not rule.when(config):
            continue
        if "{i}" in rule.flax:
            rows += [
                Rule(rule.flax.format(i=i), rule.hf.format(i=i), rule.hook)
                for i in range(config.num_layers)
            ]
        else:
            rows.append(rule)
    return rows

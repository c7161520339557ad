"""What a benchmark case is (a name, what it measures, a function producing table rows), the
`@case(...)` decorator that registers one, and `--only` selection. The cases themselves, and
`all_cases`, are in `benchmarks/cases.py`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    run: Callable  # (ctx, **params) -> list[Row]
    params: dict = dataclasses.field(default_factory=dict)
    # Entries replacing the profile's shapes ("model", "warmup", ...) for this case, so that the
    # report's header can describe what ran (ELECTRA runs at SELECTRA-small's model).
    shapes: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Row:
    case: str
    impl: str
    time_s: float | None = None  # median seconds per step / batch
    throughput: str = ""
    ratio: str = ""
    share: str = ""
    note: str = ""
    data: dict = dataclasses.field(default_factory=dict)  # everything measured, for the JSON


@dataclasses.dataclass
class Target:
    name: str
    value: float | None
    goal: str
    met: bool | None  # None: not measured in this run
    detail: str = ""


_STATIC: list[Case] = []


def case(name: str, description: str):
    """Registers `fn(ctx) -> list[Row]` as a case (`static_cases()` lists them)."""
    def register(fn):
        _STATIC.append(Case(name, description, fn))
        return fn

    return register


def static_cases() -> list[Case]:
    return list(_STATIC)


def select(cases_: list[Case], patterns: list[str]) -> list[Case]:
    """`--only` patterns: a glob (`step.*`), or a prefix (`step`, `pipeline`) of case names."""
    if not patterns:
        return cases_
    chosen = [
        c for c in cases_ if any(
            fnmatch.fnmatch(c.name, p) or c.name == p or c.name.startswith(p + ".")
            for p in patterns)
    ]
    if not chosen:
        raise SystemExit(f"--only {patterns}: no case matches; known: "
                         f"{', '.join(c.name for c in cases_)}")
    return chosen

"""The code is formatted by the one formatter configured in setup.cfg ([yapf]); `make format` fixes it."""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORMATTED = ("flaxlm", "benchmarks", "launch", "tests", "configs")


def test_every_python_file_is_formatted():
    # Imported here, not at collection: yapf's first import in a fresh environment writes its
    # grammar cache, and two pytest workers collecting at once raced on that file (EOFError).
    from yapf.yapflib import yapf_api

    style = str(ROOT / "setup.cfg")
    unformatted = []
    for folder in FORMATTED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            _, _, changed = yapf_api.FormatFile(str(path), style_config=style)
            if changed:
                unformatted.append(str(path.relative_to(ROOT)))
    assert not unformatted, f"run `make format`; not formatted: {unformatted}"

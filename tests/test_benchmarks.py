"""The benchmark suite's smoke mode: every case runs end to end on tiny shapes (no timing claims)."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_benchmark_suite_smoke_runs_every_case(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as users run
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--quiet",
         "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| case" in proc.stdout  # the table
    (result,) = (tmp_path / "results").glob("smoke-*.json")
    record = json.loads(result.read_text())
    rows = {(r["case"], r["impl"]): r for r in record["rows"]}
    cases = {case for case, _ in rows}
    assert {"step.mlm.v1000", "pipeline", "pipeline_step", "checkpoint"} <= cases
    assert not [r for r in record["rows"] if r["note"].startswith("failed")], record["rows"]
    flaxlm = rows[("step.mlm.v1000", "flaxlm mlm (float32)")]
    assert flaxlm["time_s"] > 0 and 0 < flaxlm["data"]["mfu"] < 2
    assert rows[("step.mlm.v1000", "HF PyTorch eager")]["time_s"] > 0
    assert "skipped" in rows[("step.mlm.v1000", "HF Flax (transformers 4.57)")]["note"]


def test_benchmark_cases_are_listed_per_objective_and_vocabulary():
    from benchmarks.common import PROFILES
    from benchmarks.registry import all_cases, select
    names = [c.name for c in all_cases(PROFILES["full"])]
    assert names[:2] == ["step.mlm.v30522", "step.mlm.v250002"]
    assert {"pipeline", "pipeline_step", "checkpoint"} <= set(names)
    assert [c.name for c in select(all_cases(PROFILES["full"]), ["step"])] == names[:2]
    assert [c.name for c in select(all_cases(PROFILES["full"]), ["pipeline*"])] == [
        "pipeline", "pipeline_step"]

"""The benchmark suite's smoke mode: every case runs end to end on tiny shapes, and MFU adds up."""

import json
import os
import statistics
import subprocess
import sys

import pytest

from tests.conftest import REPO


def smoke_step_flops(slots_per_example: float) -> float:
    """Training FLOPs of one smoke-profile MLM step, worked out here from the shapes alone:
    6 per matmul parameter per token (attention projections and MLP with biases), attention
    scores and weighted sum 4·L·S·D per token forward ×3, the MLM head (D×D transform, tied
    D×V projection) at each prediction."""
    from benchmarks.common import PROFILES
    p = PROFILES["smoke"]
    d, f, layers, v = p.model["hidden"], p.model["ffn"], p.model["layers"], 1000
    body_params = layers * (4 * (d * d + d) + d * f + f + f * d + d)
    per_example = (p.seq * 6 * body_params + 3 * 4 * layers * p.seq * d * p.seq + 6 *
                   (d * d + d * v) * slots_per_example)
    return p.batch * per_example


def check_mfu_row(row: dict) -> None:
    """MFU is the row's own FLOPs / its median step time / its median measured matmul peak. The
    MLM step packs its predictions: the head's FLOPs count the packed capacity per row."""
    from benchmarks.common import PROFILES, expected_predictions, max_predictions
    from flaxlm.objectives.packed_predictions import capacity
    p = PROFILES["smoke"]
    seq = p.seq
    data, info = row["data"], row["data"]["info"]
    slots = capacity(p.batch, max_predictions(seq), seq, 0.15, 1.2) / p.batch
    assert expected_predictions(seq) < slots < max_predictions(seq)
    assert info["pack_predictions"] and info["prediction_slots"] == slots
    assert info["real_predictions_per_example"] == expected_predictions(seq)
    assert info["flops_per_step"] == pytest.approx(smoke_step_flops(slots))
    assert info["useful_flops_per_step"] == pytest.approx(
        smoke_step_flops(expected_predictions(seq)))
    step, peak = row["time_s"], statistics.median(data["peaks"])
    assert step == statistics.median(data["times"])
    assert len(data["times"]) == PROFILES["smoke"].steps
    # Compilation happens before the timed steps: none of them may contain it.
    assert max(data["times"]) < info["compile_s"]
    peak_flops = peak * info["device_count"]
    assert data["mfu"] == pytest.approx(info["flops_per_step"] / step / peak_flops)
    assert data["mfu_useful"] == pytest.approx(info["useful_flops_per_step"] / step / peak_flops)
    # No step outruns the device's own measured matmul rate; padding slots are not useful work.
    assert 0 < data["mfu_useful"] < data["mfu"] < 1


def test_benchmark_suite_smoke_runs_every_case(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as users run
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([
        sys.executable, "-m", "benchmarks.run", "--smoke", "--quiet", "--results-dir",
        str(tmp_path / "results"), "--cache-dir",
        str(tmp_path / "cache")
    ], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| case" in proc.stdout  # the table
    (result, ) = (tmp_path / "results").glob("smoke-*.json")
    record = json.loads(result.read_text())
    rows = {(r["case"], r["impl"]): r for r in record["rows"]}
    cases = {case for case, _ in rows}
    assert {"step.mlm.v1000", "pipeline", "pipeline_step", "checkpoint"} <= cases
    assert not [r for r in record["rows"] if r["note"].startswith("failed")], record["rows"]
    check_mfu_row(rows[("step.mlm.v1000", "flaxlm mlm packed (float32)")])
    assert rows[("step.mlm.v1000", "HF PyTorch eager")]["time_s"] > 0
    assert "skipped" in rows[("step.mlm.v1000", "HF Flax (transformers 4.57)")]["note"]
    check_token_classification_row(rows[("step.token_classification.v1000",
                                         "flaxlm token_classification (float32)")])
    assert rows[("step.token_classification.v1000", "HF PyTorch eager")]["time_s"] > 0
    check_distill_rows(rows[("distill", "flaxlm MLM step, student alone (float32)")],
                       rows[("distill", "flaxlm DistilBERT step, teacher 2× deep (float32)")])


def check_distill_rows(mlm: dict, distill: dict) -> None:
    """The distillation step counts the student's step plus the teacher's forward: its body at
    twice the depth (2/3 of the student's forward + backward) and its MLM head (1/3 of the
    student's). Both heads run at every real token of the smoke rows (all real), since the soft
    targets cover every token unless `restrict_ce_to_mask` (distiller.py's default)."""
    from benchmarks.common import PROFILES, max_predictions
    seq = PROFILES["smoke"].seq
    assert mlm["data"]["info"]["flops_per_step"] == pytest.approx(
        smoke_step_flops(max_predictions(seq)))
    assert distill["data"]["info"]["flops_per_step"] == pytest.approx(4 / 3 *
                                                                      smoke_step_flops(seq) +
                                                                      1 / 3 * smoke_step_flops(0))
    assert distill["ratio"].endswith("× the MLM step") and distill["time_s"] > 0


def check_token_classification_row(row: dict) -> None:
    """The fine-tuning step's FLOPs: the body per token plus the D×9 classifier per token."""
    from benchmarks.common import PROFILES
    p = PROFILES["smoke"]
    d, layers = p.model["hidden"], p.model["layers"]
    per_example = smoke_step_flops(0) / p.batch + p.seq * 6 * d * 9
    info = row["data"]["info"]
    assert info["flops_per_step"] == pytest.approx(p.batch * per_example)
    # Rows of a length bucket hold padding: useful work is below the slots' work.
    assert 0 < info["useful_flops_per_step"] < info["flops_per_step"]
    assert row["time_s"] == statistics.median(row["data"]["times"]) > 0


def test_benchmark_cases_are_listed_per_objective_and_vocabulary():
    from benchmarks.common import PROFILES
    from benchmarks.cases import all_cases
    from benchmarks.registry import select
    names = [c.name for c in all_cases(PROFILES["full"])]
    assert names[:5] == [
        "step.mlm.v30522", "step.mlm.v250002", "step.token_classification.v30522",
        "step.token_classification.v250002", "step.electra.v50000"
    ]  # ELECTRA at its own size, SELECTRA-small's
    assert {"distill", "pipeline", "pipeline_step", "checkpoint"} <= set(names)
    assert [c.name for c in select(all_cases(PROFILES["full"]), ["step"])] == names[:5]
    assert [c.name for c in select(all_cases(PROFILES["full"]), ["step.token*"])] == names[2:4]
    assert [c.name for c in select(all_cases(PROFILES["full"]), ["pipeline*"])
            ] == ["pipeline", "pipeline_step"]


def test_topology_table_fitted_rows_compare_with_micro_batches_of_8(capsys):
    # Every fitted row computes in bf16 and keeps the recipe's global batch; the row it is
    # compared with gives each chip a micro-batch of 8 of that batch. --topology narrows a label
    # to one slice (what a serial, resumable run selects by); --before selects the compared rows.
    from benchmarks import topology_table
    from flaxlm import run_config, topology
    from flaxlm.run.steps import resolve_compute_dtype
    fitted = [r for r in topology_table.rows() if r.fit and "splash" not in r.label]
    assert len(fitted) == 3 * 5 + 2 + 4 + 2 and all(r.before for r in fitted)
    for row in fitted:
        config = run_config.load(os.path.join(REPO, row.config), list(row.overrides))
        before = run_config.load(os.path.join(REPO, row.config), list(row.before.overrides))
        chips = topology.parse_topology(row.topology).chips
        per_chip = before.loop.batch_size // (chips * before.step.grad_accum_steps)
        assert per_chip == topology_table.MICRO, row.before.command()
        assert config.loop.batch_size == before.loop.batch_size, row.command()
        assert resolve_compute_dtype(config.step.compute_dtype, "tpu") == "bfloat16", row.command()
    assert topology_table.main(["--list", "--only", "selectra-small", "--topology", "v5e-8"]) == 0
    assert capsys.readouterr().out.count("--fit") == 2  # fitted, splash fitted
    assert topology_table.main(
        ["--list", "--before", "--only", "selectra-small", "--topology", "v5e-8"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("flaxlm compile") == 1 and "grad_accum_steps=2" in listed  # both's


def test_topology_table_compares_only_steps_that_compute_the_same():
    from benchmarks.topology_table import _speed_up
    fitted = {"xla_step_seconds": 0.5, "model_flops_per_step": 100.0}
    assert _speed_up(fitted, {"xla_step_seconds": 1.0, "model_flops_per_step": 100.0}) == "2.00×"
    stale = {"xla_step_seconds": 1.0, "model_flops_per_step": 50.0}  # an objective changed since
    assert _speed_up(fitted, stale) == "— (model FLOPs × 2.00 since)"
    assert _speed_up(fitted, None) == "—"


def test_electra_torch_baseline_shares_embeddings_and_matches_flaxlm_size():
    """The transformers ELECTRA pair: one embedding module, the generator's head tied to it, as
    many parameters as flaxlm's pre-training model of the same shapes, and a step trains the
    shared table."""
    import jax
    import numpy as np
    import torch
    from flax import nnx

    from benchmarks.objectives import OBJECTIVES
    from benchmarks.model_specs import model_config
    from benchmarks.runners.hf_torch import build
    spec = dict(kind="hf-torch-eager", objective="electra", arch="bert", vocab=300, batch=2, seq=16,
                warmup=0, threads=1, generator_hidden_fraction=0.25,
                model=dict(hidden=64, layers=2, heads=2, ffn=128, embedding=48))
    step = build(spec)
    disc, gen = step.discriminator.electra, step.generator
    assert gen.electra.embeddings is disc.embeddings
    assert gen.generator_lm_head.weight is disc.embeddings.word_embeddings.weight
    assert gen.config.hidden_size == 16 and gen.config.num_attention_heads == 1
    objective, _ = OBJECTIVES["electra"].make(spec)
    model = objective.build_model(model_config(spec), nnx.Rngs(0))
    flaxlm_count = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert step.info["param_count"] == flaxlm_count
    before = disc.embeddings.word_embeddings.weight.detach().clone()
    result = step.run(1)
    assert np.isfinite(result["loss"]) and result["times"][0] > 0
    assert not torch.equal(before, disc.embeddings.word_embeddings.weight.detach())


def test_report_header_gives_the_shapes_of_the_cases_run():
    # ELECTRA runs at SELECTRA-small's model and warm-up, not the profile's MiniLM: a header
    # printing the profile's shapes for `--only step.electra` would describe another model.
    from benchmarks.common import PROFILES
    from benchmarks.objectives import SELECTRA_SMALL
    from benchmarks.cases import all_cases
    from benchmarks.registry import select
    from benchmarks.run import format_shapes
    full = PROFILES["full"]

    def header(patterns):
        return format_shapes(full, select(all_cases(full), patterns), threads=2, steps=6)

    rest = ("batch 16 × seq 128, 2 threads for XLA and torch alike (CPU affinity + "
            "torch.set_num_threads), medians of 6 timed steps after")
    assert header(["step.electra"]) == f"model {SELECTRA_SMALL}, {rest} 3 warm-up"
    assert header(["step.mlm"]) == f"model {full.model}, {rest} 1 warm-up"
    assert header([]) == (f"model {full.model}, {rest} 1 warm-up; step.electra.v50000: "
                          f"model {SELECTRA_SMALL}, batch 16 × seq 128, 3 warm-up")

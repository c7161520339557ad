"""`python -m benchmarks.topology_table`: the topology table of docs/scaling.md, from `flaxlm compile`.

  python -m benchmarks.topology_table                 every row (hours on 2 shared CPU cores)
  python -m benchmarks.topology_table --only flare    rows whose label contains "flare"
  python -m benchmarks.topology_table --only selectra-small --topology v5e-8    one row
  python -m benchmarks.topology_table --list

Each row compiles the real train step (`flaxlm.aot.compile_train_step`, what `flaxlm compile`
runs) for one config, topology and mesh on this CPU-only machine. Results are appended as JSON
lines to benchmarks/results/topology_table.jsonl (a row already there with the same key is
skipped, so an interrupted run continues), and the markdown table is printed from that file.
Needs `pip install 'flaxlm[tpu]'`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from flaxlm import jax_platform

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only TPU devices; no chip is used
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results", "topology_table.jsonl")
FLARE = "configs/flare_it_mlm.py"
FLARE_PRUNED = "configs/flare_it.py"
XLMR = "configs/xlmr_base_mlm.py"
SELECTRA = {"small": "configs/selectra_small.py", "medium": "configs/selectra_medium.py"}
DISTIL_MBERT = "configs/distil_mbert.py"
MINILMV2 = "configs/minilmv2_l6_h384_from_xlmr.py"
L12 = "--config.model.preset=minilm-l12-h384"
BF16 = "--config.train.compute_dtype=bfloat16"
# Recipe global batches are kept. The table's rows (issue 27) are fitted: `flaxlm compile --fit`
# searches the largest per-chip micro-batch that fits the chip's HBM, in bf16 compute with fp32
# master weights (what the pre-training configs' `compute_dtype=auto` resolves to on a TPU). Each
# is compared with the row the table held before, accumulation set so each chip saw a micro-batch
# of MICRO sequences in the recipe's own dtype (`before`; `--before` compiles those).
MICRO = 8
# Fused attention on TPU: the Pallas splash kernel, which cannot drop attention probabilities.
SPLASH = ("--config.model.attention=splash", "--config.model.attention_dropout=0.0")
SLICES = (("v4-8", 4), ("v5e-8", 8), ("v5p-8", 4), ("v6e-8", 8), ("v5e-32", 32))
FSDP = "1,8,1"


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    config: str
    topology: str
    overrides: tuple[str, ...] = ()
    # DATA,FSDP,TENSOR; "" = the config's own mesh.*: all data-parallel unless the config sets
    # one (the distillation configs, distil_mbert.py and minilmv2_*.py, set fsdp=-1)
    mesh: str = ""
    fit: bool = False  # `--fit`: the largest micro-batch that fits, instead of the accumulation
    before: Row | None = None  # the micro-batch-MICRO row this one is compared with

    @property
    def key(self) -> str:
        return " ".join([self.config, self.topology, self.mesh, *self.overrides] +
                        (["--fit"] if self.fit else []))

    def command(self) -> str:
        mesh = f" --mesh {self.mesh}" if self.mesh else ""
        fit = " --fit" if self.fit else ""
        return (f"flaxlm compile --config {self.config} --topology {self.topology}{mesh}{fit} " +
                " ".join(self.overrides)).strip()


def _accum(batch: int, chips: int) -> str:
    return f"--config.train.grad_accum_steps={max(batch // (chips * MICRO), 1)}"


def _fitted(label: str, config: str, topology: str, overrides: tuple[str, ...], batch: int,
            chips: int, before_label: str, before_overrides: tuple[str,
                                                                   ...], mesh: str = "") -> Row:
    before = Row(before_label, config, topology, before_overrides + (_accum(batch, chips), ), mesh)
    return Row(f"{label} bf16 fitted ({'fsdp' if mesh else 'data'})", config, topology,
               (BF16, ) + overrides, mesh, fit=True, before=before)


def rows() -> list[Row]:
    out = []
    for topology, chips in SLICES:
        # FLARE's recipe trained in fp32 (its card); the rows before issue 27 kept that dtype.
        out.append(
            _fitted("flare MiniLM-L6", FLARE, topology, (), 512, chips, "flare MiniLM-L6 (data)",
                    ()))
        out.append(
            _fitted("MiniLM-L12", FLARE, topology, (L12, ), 512, chips, "MiniLM-L12 (data)",
                    (L12, )))
        # xlmr_base_mlm.py computes in bf16 already: its `before` row is bf16 too.
        out.append(_fitted("xlmr-base", XLMR, topology, (), 1024, chips, "xlmr-base (data)", ()))
    # FLARE's continued pre-training stage after pruning (configs/flare_it.py): the card's
    # 14,610-token uncased vocabulary; compile takes shapes from the preset, not init_from.
    pruned = "--config.model.vocab_size=14610"
    for topology, chips in (("v4-8", 4), ("v5e-8", 8)):
        out.append(
            _fitted("flare pruned-vocab stage", FLARE_PRUNED, topology, (pruned, ), 512, chips,
                    "flare pruned-vocab stage bf16 (data)", (BF16, pruned)))
    # SELECTRA (configs/selectra_*.py): both ELECTRA towers in one step, the recipe's 128 × 512.
    for topology, chips in (("v5e-8", 8), ("v4-8", 4)):
        for size, config in SELECTRA.items():
            out.append(
                _fitted(f"selectra-{size}", config, topology, (), 128, chips,
                        f"selectra-{size} bf16 (data)", (BF16, )))
    # Distillation (issue 17): the frozen teacher's forward in the same step; its shapes come
    # from the configs' teacher_preset. fsdp over the slice shards student and teacher.
    out.append(
        _fitted("distil-mbert", DISTIL_MBERT, "v5e-8", (), 2048, 8, "distil-mbert bf16 (fsdp)", (),
                FSDP))
    out.append(
        _fitted("mminilmv2 L6 from xlmr-large", MINILMV2, "v5e-8", (), 1024, 8,
                "mminilmv2 L6 from xlmr-large bf16 (fsdp)", (), FSDP))
    # The mMiniLMv2 teacher at seq 512 (not fitted: a 1,024-sequence batch on one chip is about
    # ten compiles of ~10 minutes here): the recipe's batch in one step on one v5e chip, then
    # micro-batches of MICRO on that chip, on a v5e-8 slice data-parallel and with fsdp.
    large = "--config.model.preset=xlmr-large"
    out.append(Row("xlmr-large recipe (1 chip)", XLMR, "v5e-1", (large, )))
    out.append(Row("xlmr-large (1 chip)", XLMR, "v5e-1", (large, _accum(1024, 1))))
    out.append(Row("xlmr-large (data)", XLMR, "v5e-8", (large, _accum(1024, 8))))
    out.append(Row("xlmr-large (fsdp)", XLMR, "v5e-8", (large, _accum(1024, 8)), FSDP))
    # Fused attention: the splash kernel with attention dropout 0, on three of the fitted rows.
    for row in [r for r in out if r.fit and r.topology == "v5e-8" and
                r.label.startswith(("flare pruned", "selectra-small"))] + \
            [r for r in out if r.fit and r.topology == "v5e-32" and r.label.startswith("xlmr")]:
        out.append(
            dataclasses.replace(row, label=row.label.replace(" fitted", " splash fitted"),
                                overrides=row.overrides + SPLASH))
    return out


def compile_row(row: Row) -> dict:
    from flaxlm import aot, run_config
    from flaxlm.sharding import MeshConfig
    config = run_config.load(os.path.join(REPO, row.config), list(row.overrides))
    mesh = MeshConfig(*(int(s) for s in row.mesh.split(","))) if row.mesh else None
    start = time.perf_counter()
    if row.fit:
        report, tried = aot.fit_micro_batch(config, row.topology, mesh)
        report = report or tried[-1]
    else:
        report = aot.compile_train_step(config, row.topology, mesh)
    print(aot.format_report(report), flush=True)
    return {
        "key": row.key,
        "label": row.label,
        "command": row.command(),
        "compile_seconds": round(time.perf_counter() - start, 1),
        **aot.report_dict(report)
    }


def _gib(n) -> str:
    return "—" if n is None else f"{n / (1 << 30):.2f}"


def _step(r: dict | None) -> str:
    if not r or not r.get("xla_step_seconds"):
        return "—"
    source = "opt" if r["step_time_source"] == "optimal_seconds" else "roofline"
    return f"{r['xla_step_seconds']:.3g} ({source})"


def _speed_up(fitted: dict, before: dict | None) -> str:
    """before's estimated step ÷ fitted's, when both count the same model FLOPs per step: a
    result compiled before an objective changed what a step computes is not compared."""
    if not before or not before.get("xla_step_seconds") or not fitted.get("xla_step_seconds"):
        return "—"
    flops = fitted["model_flops_per_step"] / before["model_flops_per_step"]
    if abs(flops - 1) > 0.01:
        return f"— (model FLOPs × {flops:.2f} since)"
    return f"{before['xla_step_seconds'] / fitted['xla_step_seconds']:.2f}×"


def markdown(results: list[dict], before: list[dict | None] | None = None) -> str:
    """The table of `results`; with `before` (one result or None per row), two more columns:
    the step the micro-batch-MICRO row estimated and the fitted row's speed-up over it."""
    extra = " micro-batch 8 est. step s | speed-up |" if before is not None else ""
    lines = [
        "| model (mesh) | slice | chips | batch × seq, accum | attention, remat | args GiB | "
        "temps GiB | args+outs−alias+temps GiB | total (XLA peak) GiB / HBM | verdict | "
        "est. step s (source) | MFU |" + extra, "|---|" * 1 + "---|" * (11 + 2 * bool(extra))
    ]
    for i, r in enumerate(results):
        mfu = "—" if r.get("mfu") is None else f"{100 * r['mfu']:.0f}%"
        total = _gib(r["total_bytes"]) if r["error"] is None else f"≥ {_gib(r['total_bytes'])}"
        mesh = "×".join(str(r["mesh"][k]) for k in ("data", "fsdp", "tensor"))
        line = (f"| {r['label']} {mesh} | {r['topology']} | {r['chips']} | {r['batch_size']} × "
                f"{r['seq_len']}, {r['grad_accum_steps']} | {r.get('attention', 'xla')}, "
                f"{r.get('remat', 'none')} | {_gib(r['argument_bytes'])} | "
                f"{_gib(r['temp_bytes'])} | {_gib(r.get('sum_bytes'))} | {total} / "
                f"{r['hbm_bytes'] >> 30} | {r['verdict']} | {_step(r)} | {mfu} |")
        if before is not None:
            line += f" {_step(before[i])} | {_speed_up(r, before[i])} |"
        lines.append(line)
    return "\n".join(lines)


def _load() -> dict[str, dict]:
    if not os.path.exists(RESULTS):
        return {}
    with open(RESULTS, encoding="utf-8") as f:
        return {r["key"]: r for r in map(json.loads, filter(str.strip, f))}


def main(argv: list[str] | None = None) -> int:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    parser = argparse.ArgumentParser(prog="python -m benchmarks.topology_table")
    parser.add_argument("--only", default="", help="rows whose label or topology contains this")
    parser.add_argument("--topology", default="", help="only the rows on this slice (e.g. v5e-8)")
    parser.add_argument("--list", action="store_true", help="print the rows' commands and exit")
    parser.add_argument("--table-only", action="store_true", help="print the table from results")
    parser.add_argument("--before", action="store_true",
                        help="the micro-batch-8 rows the selected fitted rows are compared with")
    args = parser.parse_args(argv)
    selected = [
        r for r in rows()
        if (args.only in r.label or args.only == r.topology) and args.topology in ("", r.topology)
    ]
    if args.before:
        selected = list(dict.fromkeys(r.before for r in selected if r.before))
    if args.list:
        print("\n".join(r.command() for r in selected))
        return 0
    done = _load()
    if not args.table_only:
        import jax
        jax.config.update("jax_platforms", "cpu")
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        # Every slice's MiniLM-L6 row first, so an interrupted run still covers each topology.
        for row in sorted(selected, key=lambda r: not r.label.startswith("flare MiniLM-L6")):
            if row.key in done:
                continue
            print(f"== {row.command()}", flush=True)
            result = compile_row(row)
            with open(RESULTS, "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
            done[row.key] = result
    shown = [r for r in selected if r.key in done]
    befores = [done.get(r.before.key) if r.before else None for r in shown]
    print(markdown([done[r.key] for r in shown], None if args.before else befores))
    return 0


if __name__ == "__main__":
    sys.exit(main())

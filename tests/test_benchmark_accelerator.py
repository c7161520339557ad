"""`python -m benchmarks.accelerator --tiny`: the one-command accelerator benchmark's code path on
CPU (tiny shapes, one step per side, in-process); no timing claims."""

from benchmarks import accelerator


def test_accelerator_benchmark_runs_both_sides_on_cpu(capsys):
    assert accelerator.main(["--tiny", "--only", "v14610"]) == 0
    out = capsys.readouterr().out
    assert "× cpu (cpu); TINY shapes" in out
    rows = [line for line in out.splitlines() if line.startswith("| mlm-minilm-l12-v14610 |")]
    assert len(rows) == 2, out
    assert "flaxlm (float32, attention dot_product)" in rows[
        0]  # fused attention off TPU and rows[0].endswith("× |")
    assert "transformers torch-eager" in rows[1]
    for row in rows:  # median s, tokens/s and useful MFU are numbers
        cells = [c.strip() for c in row.split("|")[3:6]]
        float(cells[0]), float(cells[1].replace(",", "")), float(cells[2].rstrip("%"))

"""`flaxlm import` → `flaxlm train --config.init_from=RUN_DIR` → `flaxlm export` (slow: compiles
a train step)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from flaxlm import cli
from tests.conftest import REPO
from tests.convert.conftest import make_hf_dir, read_safetensors


@pytest.mark.slow
def test_train_continues_from_an_imported_checkpoint(tmp_path, tokenizers, monkeypatch, capsys):
    hf, imported, trained, bundle = (tmp_path / n for n in ("hf", "imported", "trained", "bundle"))
    # 5 embedding rows the tokenizer never produces: kept through training and export.
    make_hf_dir(hf, "xlmr", tokenizers["sp"], hidden=48, heads=4, intermediate=37, type_vocab=1,
                max_pos=66, extra_rows=5)
    assert cli.main(["import", "--hf", str(hf), "--out", str(imported)]) == 0
    assert "5 embedding rows the tokenizer never produces kept" in capsys.readouterr().out
    monkeypatch.chdir(REPO)
    assert cli.main([
        "train", "--config", "configs/tiny.py", "--workdir",
        str(trained), f"--config.init_from={imported}", "--config.train.steps=2",
        "--config.train.log_every=1", "--config.data.seq_len=32", "--config.data.eval_files=",
        "--no-progress"
    ]) == 0
    out = capsys.readouterr().out
    assert f"tensors from init_from ({imported}, step 0); fresh: none" in out
    assert json.loads((trained / "config.json").read_text())["model"]["hidden_size"] == 48
    assert cli.main(["export", "--workdir", str(trained), "--out", str(bundle)]) == 0
    card = (bundle / "README.md").read_text()
    assert "- steps: 2" in card and "| loss |" in card

    before = read_safetensors(hf / "model.safetensors")
    after = read_safetensors(bundle / "model.safetensors")
    assert set(before) == set(after)
    assert all(before[k].shape == after[k].shape for k in before)
    moved = [k for k in before if not np.array_equal(before[k], after[k])]
    assert moved, "two training steps changed nothing"
    assert os.path.isdir(trained / "checkpoints" / "2")

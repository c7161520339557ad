"""The FLARE chain in miniature (slow: two training runs and two exports): a random
transformers XLM-R on an it+es SentencePiece vocabulary → prune for Italian + uncase →
continued MLM (configs/flare_it.py) → POS fine-tuning → export with parity → transformers'
fill-mask pipeline on lowercased text."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from flaxlm import cli
from tests.conftest import IT_EVAL, IT_TRAIN, REPO
from tests.finetune.test_labelled import fixture


def _run(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(args) == 0, args
    print(out.getvalue())
    return out.getvalue()


@pytest.mark.slow
def test_flare_chain_import_prune_uncase_mlm_pos_export(tmp_path, hf_xlmr, monkeypatch):
    import transformers

    monkeypatch.chdir(REPO)
    pruned, mlm, pos = tmp_path / "pruned", tmp_path / "mlm", tmp_path / "pos"
    printed = _run([
        "prune-vocab", "--model", hf_xlmr, "--corpus", IT_TRAIN, "--heldout", IT_EVAL,
        "--min-doc-freq", "0.05", "--uncase", "--out",
        str(pruned)
    ])
    assert "case variants merged" in printed and "held-out    unk rate" in printed
    report = json.loads((pruned / "prune_report.json").read_text())
    assert report["after"]["vocab"] < report["before"]["vocab"]

    printed = _run([
        "train", "--config", "configs/flare_it.py", "--workdir",
        str(mlm), "--no-progress", f"--config.init_from={pruned}",
        f"--config.data.train_files={IT_TRAIN}", f"--config.data.eval_files={IT_EVAL}",
        "--config.data.seq_len=32", "--config.train.batch_size=16",
        "--config.train.grad_accum_steps=2", "--config.train.steps=3", "--config.train.log_every=1",
        "--config.train.eval_every=3", "--config.train.checkpoint_every=3",
        "--config.train.compute_dtype=float32"
    ])
    assert f"tensors from init_from ({pruned}, step 0); fresh: none" in printed
    losses = [
        json.loads(line)["loss"] for line in (mlm / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert len(losses) >= 3 and all(np.isfinite(losses))

    _run([
        "train", "--config", "configs/pos_it_isdt.py", "--workdir",
        str(pos), "--no-progress", f"--config.init_from={mlm}",
        f"--config.data.train_files={fixture('it_isdt-dev-head.conllu')}",
        f"--config.data.eval_files={fixture('it_isdt-test-head.conllu')}",
        "--config.finetune.epochs=1", "--config.train.batch_size=8", "--config.data.seq_len=32"
    ])
    for workdir, name in ((mlm, "mlm_release"), (pos, "pos_release")):
        printed = _run(["export", "--workdir", str(workdir), "--out", str(tmp_path / name)])
        assert "parity vs transformers" in printed

    fill = transformers.pipeline("fill-mask", model=str(tmp_path / "mlm_release"), top_k=3)
    text = f"il sistema linux è una {fill.tokenizer.mask_token} molto potente."
    assert len(fill(text)) == 3
    tok = fill.tokenizer
    assert tok("IL SISTEMA Linux")["input_ids"] == tok("il sistema linux")["input_ids"]
    tagger = transformers.pipeline("token-classification", model=str(tmp_path / "pos_release"))
    assert tagger("il gatto dorme sul divano.")

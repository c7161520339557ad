"""finetune.test_on: the test files are scored on the best dev epoch's weights (flaxlm's default)
or on the last epoch's (SELECTRA's protocol)."""

import json

import pytest

from flaxlm import run_config
from flaxlm.errors import FlaxlmError
from flaxlm.run import results
from flaxlm.run.protocol import EvalSelection


class _Objective:
    name = "sequence_classification"
    selection = EvalSelection("accuracy", "max")


def test_last_epoch_is_scored_with_test_on_last(tmp_path, capsys):
    (tmp_path / "best.json").write_text(
        json.dumps({
            "step": 5,
            "metric": "accuracy",
            "mode": "max",
            "value": 0.9
        }))
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in ({
            "step": 5,
            "loss": 0.5,
            "eval_accuracy": 0.9
        }, {
            "step": 10,
            "loss": 0.4,
            "eval_accuracy": 0.8
        })))
    scored = []

    def evaluate(params, batches):
        scored.append(params)
        return {"eval_accuracy": 0.7}

    out = results.finish(str(tmp_path), objective=_Objective(), test_batches=[{}],
                         evaluate=evaluate, final_params="last weights", abstract_params=None,
                         final_step=10, steps_per_epoch=5, param_count=1, is_main=True,
                         test_on="last")
    assert scored == ["last weights"]  # not step 5's checkpoint, which best.json names
    assert (out["test_step"], out["test_on"], out["best"]["step"]) == (10, "last", 5)
    assert "test (step 10, the last epoch): accuracy=0.7000" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text())["test_on"] == "last"


def test_test_on_is_checked():
    config = run_config.load("configs/xnli_es.py", ["--config.finetune.test_on=last"])
    assert config.test_on == "last"
    with pytest.raises(FlaxlmError, match="finetune.test_on='first': one of best, last"):
        run_config.load("configs/xnli_es.py", ["--config.finetune.test_on=first"])

"""`curves.png` plots the run's own objective metrics, read from config.json and metrics.jsonl."""

import dataclasses
import json

from flaxlm import plots
from flaxlm.objectives import registry
from flaxlm.run.protocol import EvalSelection


def make_workdir(path, objective: str, lines: list[dict]):
    path.mkdir()
    config = {
        "objective": objective,
        "model": {},
        "config": {
            "objective": {
                "name": objective,
                objective: {}
            }
        }
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


TRAINER_KEYS = {
    "learning_rate": 1e-3,
    "grad_norm": 1.0,
    "tokens_per_sec": 900.0,
    "mfu": 0.3,
    "mfu_slots": 0.4
}


def test_mlm_keeps_its_loss_and_accuracy_picture(tmp_path):
    workdir = make_workdir(tmp_path / "run", "mlm", [
        {
            "step": 5,
            "loss": 7.0,
            "accuracy": 0.05,
            "masked_tokens": 40.0,
            **TRAINER_KEYS
        },
        {
            "step": 10,
            "loss": 6.0,
            "accuracy": 0.10,
            "masked_tokens": 38.0,
            **TRAINER_KEYS
        },
        {
            "step": 10,
            "eval_loss": 6.5,
            "eval_accuracy": 0.08
        },
    ])
    panels = plots.curve_panels(workdir)
    assert [p.title for p in panels] == ["MLM loss", "MLM accuracy"]
    assert panels[0].train == ((5, 7.0), (10, 6.0)) and panels[0].held_out == ((10, 6.5), )
    assert panels[1].train == ((5, 0.05), (10, 0.10)) and panels[1].held_out == ((10, 0.08), )
    out = plots.plot_curves(workdir)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


class _TwoTowers:
    """An objective with other metrics than MLM's and a held-out selection metric."""

    name = "electra"

    @dataclasses.dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config):
        self.summary_keys = ("loss", "rtd_accuracy", "gen_loss")
        self.selection = EvalSelection("rtd_f1")


def test_another_objective_plots_its_own_metrics(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.OBJECTIVES, "electra", _TwoTowers)
    workdir = make_workdir(tmp_path / "run", "electra", [
        {
            "step": 1,
            "loss": 9.0,
            "rtd_accuracy": 0.5,
            "gen_loss": 7.0,
            **TRAINER_KEYS
        },
        {
            "step": 2,
            "loss": 8.0,
            "rtd_accuracy": 0.6,
            "gen_loss": 6.5,
            **TRAINER_KEYS
        },
        {
            "step": 2,
            "eval_loss": 8.5,
            "eval_rtd_accuracy": 0.55,
            "eval_rtd_f1": 0.4
        },
    ])
    panels = plots.curve_panels(workdir)
    assert [p.title for p in panels
            ] == ["ELECTRA loss", "ELECTRA rtd_accuracy", "ELECTRA gen_loss", "ELECTRA rtd_f1"]
    assert panels[1].train == ((1, 0.5), (2, 0.6)) and panels[1].held_out == ((2, 0.55), )
    assert panels[2].held_out == () and panels[3] == plots.Panel("ELECTRA rtd_f1", (), ((2, 0.4), ))
    assert plots.plot_curves(workdir, str(tmp_path / "curves.png")) == str(tmp_path / "curves.png")


def test_an_objective_unknown_here_is_plotted_from_its_loss(tmp_path):
    workdir = make_workdir(tmp_path / "run", "distill", [{
        "step": 1,
        "loss": 3.0,
        "attention_kl": 0.7,
        **TRAINER_KEYS
    }])
    assert plots.curve_panels(workdir) == [plots.Panel("DISTILL loss", ((1, 3.0), ), ())]


def test_nothing_logged_draws_nothing(tmp_path):
    workdir = make_workdir(tmp_path / "run", "mlm", [])
    assert plots.plot_curves(workdir) is None

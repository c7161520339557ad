"""Continuing a workdir: damaged run files, the decay horizon, changed settings, NaN policy."""

import json
import os
import shutil

import numpy as np
import pytest

from flaxlm.run.checkpoint import read_params
from flaxlm.run.workdir import Workdir
from tests.test_train import _error_line, _train as _train_with_eval


def _train(workdir, tokenizer, *extra):
    # Nothing here needs the held-out evaluation; skipping it halves each run.
    return _train_with_eval(workdir, tokenizer, "--config.data.eval_files=", *extra)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, tiny_tokenizer_dir):
    """4 steps of batch 8, checkpoints at 2 and 4, a decay horizon of 4 steps."""
    workdir = tmp_path_factory.mktemp("short")
    assert _train(workdir, tiny_tokenizer_dir, "--config.train.steps=4",
                  "--config.train.checkpoint_every=2", "--config.train.warmup_steps=1") == 0
    return workdir


def _copy(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_torn_last_metrics_line_is_dropped_and_the_run_resumes(short_run, tmp_path,
                                                               tiny_tokenizer_dir, recwarn):
    run = _copy(short_run, tmp_path)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 5, "lo')
    assert _train(run, tiny_tokenizer_dir, "--config.train.steps=5",
                  "--config.train.warmup_steps=1") == 0
    assert any("torn last line" in str(w.message) for w in recwarn)
    steps = [m["step"] for m in Workdir(run).read_metrics() if "loss" in m]
    assert steps == [1, 2, 3, 4, 5]


def test_damaged_config_json_is_one_line_and_touches_nothing(short_run, tmp_path,
                                                             tiny_tokenizer_dir, capsys):
    run = _copy(short_run, tmp_path)
    (run / "config.json").write_text('{"config": {"train": ')
    before = {p: os.path.getmtime(os.path.join(d, p)) for d, _, fs in os.walk(run) for p in fs}
    assert _train(run, tiny_tokenizer_dir, "--config.train.steps=6") == 2
    line = _error_line(capsys)
    assert "config.json is damaged" in line and "new --workdir" in line
    after = {p: os.path.getmtime(os.path.join(d, p)) for d, _, fs in os.walk(run) for p in fs}
    assert before == after


def test_raising_steps_keeps_the_decay_horizon(short_run, tmp_path, tiny_tokenizer_dir, capsys):
    run = _copy(short_run, tmp_path)
    assert json.loads((run / "config.json").read_text())["decay_steps"] == 4
    assert _train(run, tiny_tokenizer_dir, "--config.train.steps=6",
                  "--config.train.warmup_steps=1") == 0
    assert "steps past 4 (the decay horizon)" in capsys.readouterr().out
    lr = {m["step"]: m["learning_rate"] for m in Workdir(run).read_metrics() if "loss" in m}
    # Step s applies schedule(s - 1): warmup over 1 update, then linear decay 1e-3 → 0 by update
    # 4; a re-planned schedule would still be decaying (above 0) at steps 5 and 6.
    np.testing.assert_allclose([lr[3], lr[4]], [1e-3 * 2 / 3, 1e-3 / 3], rtol=1e-5)
    assert lr[5] == pytest.approx(0.0, abs=1e-9) and lr[6] == pytest.approx(0.0, abs=1e-9)
    # An explicit horizon re-plans it.
    assert _train(run, tiny_tokenizer_dir, "--config.train.steps=7",
                  "--config.train.warmup_steps=1", "--config.train.decay_steps=10") == 0
    lr = {m["step"]: m["learning_rate"] for m in Workdir(run).read_metrics() if "loss" in m}
    np.testing.assert_allclose(lr[7], 1e-3 * 4 / 9, rtol=1e-5)


def test_a_changed_batch_size_resumes_at_the_next_example(short_run, tmp_path, tiny_tokenizer_dir):
    run = _copy(short_run, tmp_path)
    assert _train(run, tiny_tokenizer_dir, "--config.train.steps=6", "--config.train.batch_size=16",
                  "--config.train.warmup_steps=1") == 0
    _, meta, step = read_params(str(run))
    assert step == 6 and meta["examples_consumed"] == 4 * 8 + 2 * 16


def test_init_from_refuses_shape_overrides(short_run, tmp_path, tiny_tokenizer_dir, capsys):
    assert _train(tmp_path / "new", tiny_tokenizer_dir, f"--config.init_from={short_run}",
                  "--config.model.num_layers=3") == 2
    line = _error_line(capsys)
    assert "model.num_layers=3 (init_from has 2)" in line
    assert not os.path.exists(tmp_path / "new" / "checkpoints")


def test_nan_stop_stops_at_the_first_non_finite_step_between_logs(tmp_path, tiny_tokenizer_dir,
                                                                  capsys):
    # An absurd learning rate overflows the weights at step 1, so step 2's loss is not finite.
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.learning_rate=1e37",
                  "--config.train.warmup_steps=0", "--config.train.log_every=10",
                  "--config.train.steps=6", "--config.train.nan_policy=stop") == 2
    assert "non-finite loss or gradient at step 2" in _error_line(capsys)


def test_logged_learning_rate_is_the_applied_one_after_skipped_steps(tmp_path, tiny_tokenizer_dir):
    # Half the updates are skipped: above train.max_skipped_share's default, which would stop
    # the run before its checkpoint (tests/test_checkpoint_integrity.py); allowed here.
    assert _train(tmp_path, tiny_tokenizer_dir, "--config.train.learning_rate=1e37",
                  "--config.train.warmup_steps=4", "--config.train.steps=4",
                  "--config.train.max_skipped_share=1.0") == 0
    lines = {m["step"]: m for m in Workdir(tmp_path).read_metrics() if "loss" in m}
    # Step 1 applies lr 0 (warmup), step 2 lr 1e37/4 overflows the weights, steps 3-4 are
    # skipped: optax has counted 2 updates, so step 4 would apply schedule(2), not schedule(3).
    assert lines[4]["skipped"] == 2
    assert lines[4]["learning_rate"] == pytest.approx(1e37 * 2 / 4, rel=1e-6)


def test_another_tokenizer_for_the_same_workdir_is_refused(short_run, tmp_path, capsys,
                                                           it_small_corpus):
    from flaxlm.data.tokenizers import train_tokenizer
    other = tmp_path / "other_tok"
    train_tokenizer([it_small_corpus], vocab_size=1500, kind="unigram", out_dir=str(other))
    run = _copy(short_run, tmp_path)
    before = sorted(os.listdir(run / "tokenizer"))
    assert _train(run, str(other), "--config.train.steps=6") == 2
    assert "differs from the tokenizer this workdir was trained with" in _error_line(capsys)
    assert sorted(os.listdir(run / "tokenizer")) == before

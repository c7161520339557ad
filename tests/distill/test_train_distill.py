"""Both distillation objectives through `flaxlm train`'s own loop, from a teacher workdir that a
short flaxlm MLM run made: weights from the teacher, metrics, resume re-reading the teacher."""

import dataclasses
import re

import pytest

from flaxlm import run_config
from flaxlm.run.workdir import Workdir
from flaxlm.train import train
from tests.conftest import IT_EVAL, IT_TRAIN


def _config(tokenizer, objective, steps, layers, **section):
    c = run_config.base_config()
    c.objective.name = objective
    c.objective[objective].update(section)
    c.model.preset, c.model.num_layers = "tiny", layers
    c.data.tokenizer, c.data.seq_len = tokenizer, 32
    c.data.train_files, c.data.eval_files = IT_TRAIN, IT_EVAL
    c.train.update(steps=steps, batch_size=8, learning_rate=1e-3, log_every=1, eval_every=steps,
                   checkpoint_every=1, keep_checkpoints=1)
    c.lock()
    return run_config.resolve(c)


@pytest.fixture(scope="module")
def teacher(tiny_tokenizer_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("teacher")
    train(_config(tiny_tokenizer_dir, "mlm", 4, 4), str(workdir), progress=False)
    return str(workdir)


@pytest.mark.slow
def test_distilbert_trains_from_a_teacher_workdir_and_resumes(teacher, tiny_tokenizer_dir, tmp_path,
                                                              capsys):
    config = _config(tiny_tokenizer_dir, "distilbert", 2, 2, teacher=teacher, teacher_layers="1,3")
    train(config, str(tmp_path), progress=False)
    out = capsys.readouterr().out
    # Embeddings, two layers and the MLM head of the student, and the whole teacher, from it.
    assert re.search(
        rf"weights: \d+ tensors from teacher \({re.escape(teacher)}, step 4\); "
        r"fresh: none", out), out
    last = [m for m in Workdir(str(tmp_path)).read_metrics() if "soft_ce" in m][-1]
    assert {"mlm_loss", "cosine", "accuracy", "mfu"} <= set(last)
    assert "eval_soft_ce" in Workdir(str(tmp_path)).read_metrics()[-1]
    train(dataclasses.replace(config, loop=dataclasses.replace(config.loop, steps=3)),
          str(tmp_path), progress=False)
    assert re.search(r"resumed from checkpoint 2; frozen weights: \d+ tensors from teacher",
                     capsys.readouterr().out)


@pytest.mark.slow
def test_minilmv2_trains_from_a_teacher_workdir(teacher, tiny_tokenizer_dir, tmp_path, capsys):
    train(
        _config(tiny_tokenizer_dir, "minilmv2", 2, 2, teacher=teacher, relation_heads=8,
                teacher_layer=2), str(tmp_path), progress=False)
    assert "tensors from teacher" in capsys.readouterr().out
    last = [m for m in Workdir(str(tmp_path)).read_metrics() if "qq_kl" in m][-1]
    assert last["loss"] > 0 and {"kk_kl", "vv_kl", "mfu"} <= set(last)

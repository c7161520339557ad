"""The distillation configs build the models they promise."""

import os

import jax
from flax import nnx

from flaxlm import run_config
from flaxlm.models.encoder import Encoder
from flaxlm.objectives.registry import make_objective
from tests.conftest import REPO


def _load(name):
    config = run_config.load(os.path.join(REPO, "configs", name))
    return config, make_objective(config.objective, config.objective_sections)


def test_distillation_configs_build_their_students_and_teachers():
    config, objective = _load("distil_mbert.py")
    student = config.model(119_547, 0)
    # DistilmBERT: 134.7M parameters without the MLM head (the embeddings and 6 layers).
    encoder = nnx.eval_shape(lambda: Encoder(student, rngs=nnx.Rngs(params=0)))
    count = sum(x.size for x in jax.tree.leaves(nnx.state(encoder, nnx.Param)))
    assert abs(count / 134.7e6 - 1) < 0.01, count
    assert student.arch == "distilbert" and student.type_vocab_size == 0
    assert objective.resolved_teacher(student).num_layers == 12
    assert objective.config.layers() == (0, 2, 4, 7, 9, 11)

    config, objective = _load("minilmv2_l6_h384_from_xlmr.py")
    student = config.model(250_002, 1)
    model = nnx.eval_shape(lambda: objective.build_model(student, nnx.Rngs(params=0)))
    # The frozen teacher is XLM-R large cut after its 21st layer, in bf16.
    assert len(model.teacher.layers) == 21 and model.teacher.config.hidden_size == 1024
    assert model.teacher.layers[0].attention.query.kernel.dtype == jax.numpy.bfloat16
    assert model.encoder.layers[0].attention.query.kernel.dtype == jax.numpy.float32

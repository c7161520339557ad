"""DistilBERT-style distillation: the three loss terms against torch's own functions (what
transformers' distiller.py calls), the student's start from chosen teacher layers, and a student
with a pruned vocabulary reading teacher logits gathered over its tokens."""

import dataclasses
import json
import types

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from flaxlm.models.heads import MaskedLMModel, param_names
from flaxlm.objectives.distill_bert import (DistilBert, DistilBertConfig, cosine_loss_sum,
                                            soft_target_sum)
from flaxlm.objectives.teacher import student_to_teacher_ids
from flaxlm.run import weights
from tests.distill.helpers import VOCAB, mlm_batch

TEACHER = preset("tiny", arch="bert", vocab_size=VOCAB, hidden_size=32, num_layers=4, num_heads=2,
                 intermediate_size=64, type_vocab_size=2, pooler=True, pad_token_id=1)
STUDENT = preset("tiny", arch="distilbert", vocab_size=VOCAB, hidden_size=32, num_heads=2,
                 intermediate_size=64, type_vocab_size=0, pad_token_id=1, hidden_dropout=0.0,
                 attention_dropout=0.0)


def _objective(**config):
    objective = DistilBert(DistilBertConfig(**{"teacher_layers": "1,3", **config}))
    objective.teacher_config = TEACHER
    return objective


def test_soft_target_and_cosine_losses_match_torch():
    rng = np.random.default_rng(0)
    student_BxMxV, teacher_BxMxV = (3 * rng.standard_normal((2, 5, 11)) for _ in range(2))
    weights_BxM = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], np.float32)
    got = soft_target_sum(jnp.asarray(student_BxMxV, jnp.float32),
                          jnp.asarray(teacher_BxMxV, jnp.float32), jnp.asarray(weights_BxM), 2.0)
    real = weights_BxM > 0
    s, t = torch.tensor(student_BxMxV[real]), torch.tensor(teacher_BxMxV[real])
    want = torch.nn.functional.kl_div(torch.log_softmax(s / 2.0, -1), torch.softmax(t / 2.0, -1),
                                      reduction="batchmean") * 4.0
    np.testing.assert_allclose(float(got) / real.sum(), float(want), rtol=1e-5)

    student_BxLxD, teacher_BxLxD = (rng.standard_normal((2, 6, 8)) for _ in range(2))
    mask_BxL = (np.arange(6) < np.array([[6], [3]])).astype(np.int32)
    got = cosine_loss_sum(jnp.asarray(student_BxLxD, jnp.float32),
                          jnp.asarray(teacher_BxLxD, jnp.float32), jnp.asarray(mask_BxL))
    real = mask_BxL > 0
    want = torch.nn.functional.cosine_embedding_loss(torch.tensor(student_BxLxD[real]),
                                                     torch.tensor(teacher_BxLxD[real]),
                                                     torch.ones(int(real.sum())))
    np.testing.assert_allclose(float(got) / real.sum(), float(want), rtol=1e-5)


def test_student_starts_from_chosen_teacher_layers():
    objective = _objective()
    model = nnx.eval_shape(lambda: objective.build_model(STUDENT, nnx.Rngs(params=0)))
    targets = {n: v.shape for n, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    targets = {"/".join(map(str, n)): s for n, s in targets.items()}
    teacher = nnx.eval_shape(lambda: MaskedLMModel(TEACHER, rngs=nnx.Rngs(params=0)))
    source = {n: s.shape for n, s in zip(param_names(teacher), jax_leaves(teacher))}
    plan = weights.plan(objective.init_rules(False), targets, {"teacher": source})
    assert plan.fresh == []
    assert plan.loaded["encoder/layers/0/output/kernel"] == ("teacher",
                                                             "encoder/layers/1/output/kernel")
    assert plan.loaded["encoder/layers/1/attention/query/kernel"] == (
        "teacher", "encoder/layers/3/attention/query/kernel")
    assert plan.loaded["encoder/embeddings/position/embedding"] == (
        "teacher", "encoder/embeddings/position/embedding")
    assert plan.loaded["mlm_head/bias"] == ("teacher", "mlm_head/bias")
    assert plan.loaded["teacher/encoder/layers/2/output/bias"] == ("teacher",
                                                                   "encoder/layers/2/output/bias")
    # The teacher is built without its pooler; the student has no token types to take.
    assert not any("pooler" in n for n in targets)
    assert not any("token_type" in n for n in targets if not n.startswith("teacher/"))
    # With init_from the student comes from there; only the teacher from its workdir.
    assert [r.source for r in objective.init_rules(True)] == ["init_from", "teacher"]
    with pytest.raises(FlaxlmError, match="teacher_layers='1,3' must name"):
        objective.build_model(dataclasses.replace(STUDENT, num_layers=3), nnx.Rngs(params=0))


def jax_leaves(module):
    return [v.value for _, v in nnx.to_flat_state(nnx.state(module, nnx.Param))]


def _tokenizer(tmp_path, name, tokens, **roles):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "tokenizer.json").write_text(
        json.dumps({"model": {
            "type": "WordPiece",
            "vocab": {
                t: i
                for i, t in enumerate(tokens)
            }
        }}))
    return types.SimpleNamespace(path=str(directory), kind="wordpiece", vocab_size=len(tokens),
                                 **roles)


def test_pruned_student_reads_teacher_logits_over_its_tokens(tmp_path):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" for i in range(VOCAB - len(specials))]
    roles = dict(pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
    teacher_tok = _tokenizer(tmp_path, "teacher", specials + words, **roles)
    kept = words[::-3]  # a subset, in another order
    student_tok = _tokenizer(tmp_path, "student",
                             ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"] + kept, pad_id=0,
                             cls_id=1, sep_id=2, unk_id=3, mask_id=4)
    to_teacher = student_to_teacher_ids(student_tok, teacher_tok)
    assert list(to_teacher[:5]) == [0, 2, 3, 1, 4]
    assert [words[i - 5] for i in to_teacher[5:]] == kept
    assert student_to_teacher_ids(teacher_tok, teacher_tok) is None
    with pytest.raises(FlaxlmError, match=r"1 tokens of the student .* \['zz'\]"):
        student_to_teacher_ids(_tokenizer(tmp_path, "other", specials + ["zz"], **roles),
                               teacher_tok)

    objective = _objective(teacher_layers="", restrict_ce_to_mask=True)  # logits at the slots
    objective.student_to_teacher = to_teacher
    student = dataclasses.replace(STUDENT, vocab_size=len(to_teacher), pad_token_id=0)
    objective.teacher_config = dataclasses.replace(TEACHER, pad_token_id=0)
    model = objective.build_model(student, nnx.Rngs(params=0))
    batch = {
        k: jnp.asarray(v)
        for k, v in mlm_batch(np.random.default_rng(0), 3, vocab=len(to_teacher), pad_id=0).items()
    }

    @nnx.jit
    def outputs(model, batch):
        _, student_BxMxV, _, teacher_BxMxV = objective.outputs(model, batch, dtype=jnp.float32,
                                                               dropout_key=None)
        full_BxLxV = model.teacher.all_position_logits(
            jnp.asarray(to_teacher)[batch["input_ids"]], batch["attention_mask"],
            batch["token_type_ids"])
        return student_BxMxV, teacher_BxMxV, full_BxLxV

    student_BxMxV, teacher_BxMxV, full_BxLxV = outputs(model, batch)
    assert teacher_BxMxV.shape == student_BxMxV.shape == (3, 4, len(to_teacher))
    want_BxMxV = np.take_along_axis(np.asarray(full_BxLxV),
                                    np.asarray(batch["masked_positions"])[..., None], 1)
    np.testing.assert_allclose(teacher_BxMxV, want_BxMxV[..., to_teacher], rtol=1e-5, atol=1e-5)
    # Its embedding and head rows are not the teacher's: only layers start from the teacher.
    layered = _objective()
    layered.student_to_teacher = to_teacher
    assert [r.target for r in layered.init_rules(False)
            ] == ["encoder/layers/0", "encoder/layers/1", "teacher"]


@pytest.mark.parametrize("name", ["distilbert", "minilmv2"])
def test_bad_mask_rates_name_the_distillation_objectives_keys(name):
    from flaxlm.objectives.registry import make_objective

    with pytest.raises(FlaxlmError, match=rf"^objective\.{name}\.mask_rate must be in \(0, 1\)"):
        make_objective(name, {name: {"mask_rate": 1.5}})
    with pytest.raises(FlaxlmError, match=rf"objective\.{name}\.random_token_rate=0\.5"):
        make_objective(name, {name: {"mask_token_rate": 0.8, "random_token_rate": 0.5}})


def test_freeze_position_embeddings_is_a_zero_learning_rate_scale():
    """Upstream's --freeze_pos_embs: a zero scale stops the update, weight decay included."""
    names = ["encoder/embeddings/position/embedding", "encoder/embeddings/word/embedding"]
    assert _objective().lr_scales(STUDENT, names) is None
    assert _objective(freeze_position_embeddings=True).lr_scales(STUDENT, names) == {
        "encoder/embeddings/position/embedding": 0.0
    }

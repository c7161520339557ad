"""MiniLMv2 training parity: flaxlm's `minilmv2` objective against the relation loss of the
MiniLMv2 paper (arXiv 2012.15828 §3.1, eq. 1-3) written here in PyTorch on BertForMaskedLM
(student) and a 3-layer BertModel (teacher, distilled from its upper-middle layer 1) holding the
same weights, on flaxlm's own batch with its masked slots given back their labels (the paper
distills on unmasked text).

Paper: for each of Q-Q, K-K, V-V, concatenate the attention heads of the layer's projections,
split them into A_r relation heads of width d_r, R = softmax(A·Aᵀ/√d_r); loss = Σ over the three
relations of 1/(A_r·|x|) Σ_heads Σ_positions KL(R_teacher ‖ R_student), the student's last layer
against the teacher's chosen one. The paper says nothing about padding; here (as in flaxlm)
padded keys are outside the softmax (additive -1e4, exp underflows to 0) and padded queries
outside the average. Tensors the loss never reaches (the student's last FFN, its MLM head) get no
gradient: torch's AdamW skips them, so they must stay as they were.
"""

import jax
import numpy as np
import torch

from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.models.config import preset
from flaxlm.models.param_tree import flat_names, unflatten_like
from flaxlm.objectives.distill_minilm import MiniLMv2, MiniLMv2Config
from tests.parity import reference
from tests.parity.conftest import SEQ_LEN

RELATION_HEADS, TEACHER_LAYER = 8, 1


def qkv_of_layer(bert, layer: int, ids, attention):
    """The layer's query, key and value projections (B×L×H·K), through forward hooks."""
    captured = {}
    attention_module = bert.encoder.layer[layer].attention.self
    hooks = [
        getattr(attention_module, name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name in ("query", "key", "value")
    ]
    bert(input_ids=ids, attention_mask=attention, token_type_ids=torch.zeros_like(ids))
    for hook in hooks:
        hook.remove()
    return [captured[name] for name in ("query", "key", "value")]


def relation_log_softmax(a_BxLxW, attention, heads):
    b, length, width = a_BxLxW.shape
    a_BxRxLxS = a_BxLxW.view(b, length, heads, width // heads).transpose(1, 2)
    scores = a_BxRxLxS @ a_BxRxLxS.transpose(-1, -2) / (width // heads) ** 0.5
    scores = scores + (1.0 - attention[:, None, None, :].float()) * -1e4
    return torch.log_softmax(scores, dim=-1)


def minilmv2_loss(student, teacher, batch) -> torch.Tensor:
    ids = torch.from_numpy(batch["input_ids"].astype(np.int64)).clone()
    rows, slots = np.nonzero(batch["masked_weights"])
    ids[rows, batch["masked_positions"][rows, slots]] = torch.from_numpy(
        batch["masked_labels"][rows, slots].astype(np.int64))
    attention = torch.from_numpy(batch["attention_mask"].astype(np.int64))
    student_qkv = qkv_of_layer(student.bert, len(student.bert.encoder.layer) - 1, ids, attention)
    with torch.no_grad():
        teacher_qkv = qkv_of_layer(teacher, TEACHER_LAYER, ids, attention)
    real_queries = attention.float()[:, None, :, None]
    loss = 0.0
    for s, t in zip(student_qkv, teacher_qkv):
        log_s = relation_log_softmax(s, attention, RELATION_HEADS)
        log_t = relation_log_softmax(t, attention, RELATION_HEADS)
        kl = torch.nn.functional.kl_div(log_s, log_t, reduction="none", log_target=True)
        loss = loss + torch.sum(kl * real_queries) / (RELATION_HEADS * attention.sum())
    return loss


def test_minilmv2_loss_and_one_adamw_step_match_the_paper(wp_tokenizer_dir, mlm_batch):
    tok = load_tokenizer(wp_tokenizer_dir)
    shape = dict(arch="bert", vocab_size=tok.vocab_size, type_vocab_size=2, pad_token_id=tok.pad_id,
                 max_position_embeddings=SEQ_LEN, layer_norm_eps=1e-12, hidden_dropout=0.0,
                 attention_dropout=0.0)
    student_config = preset("tiny", hidden_size=32, num_heads=2, intermediate_size=48, **shape)
    teacher_config = preset("tiny", hidden_size=48, num_heads=3, intermediate_size=64, num_layers=3,
                            **shape)
    # The teacher: a random transformers model, read into flaxlm's frozen tree (layers 0-1).
    teacher_mlm = reference.random_torch_model(teacher_config, seed=4)
    teacher_flat = reference.to_flax_names(teacher_config, dict(teacher_mlm.state_dict()))

    objective = MiniLMv2(MiniLMv2Config(teacher_layer=TEACHER_LAYER, relation_heads=RELATION_HEADS))
    objective.teacher_config = teacher_config
    step = reference.Step(eps=1e-6, weight_decay=0.01, max_grad_norm=1.0)
    program = reference.flax_program(objective, student_config, step)
    key = jax.random.key_data(jax.random.key(5))
    params = reference.noisy_params(jax.device_get(program.init_state(key)["params"]), 5)
    abstract_frozen = jax.device_get(program.init_frozen(key))
    frozen = unflatten_like(abstract_frozen, {
        k: teacher_flat["encoder/" + k.removeprefix("teacher/")]
        for k in flat_names(abstract_frozen)
    })
    before = {k: np.asarray(v) for k, v in flat_names(params).items()}
    flax_loss, flax_grads, flax_after = reference.flax_step(program, params, frozen, mlm_batch)

    student = reference.torch_model(student_config, before)
    loss = minilmv2_loss(student, teacher_mlm.bert, mlm_batch)
    loss.backward()
    named = dict(student.named_parameters())
    # Tensors without a gradient (None: the loss never reaches them) are compared as zeros.
    torch_grads = reference.to_flax_names(student_config, {
        k: (p.grad if p.grad is not None else torch.zeros_like(p))
        for k, p in named.items()
    })
    untouched = [k for k, p in named.items() if p.grad is None]
    assert untouched, "the student's last FFN and MLM head get no gradient"
    reference.adamw_step(named, step, torch_clip=True)
    torch_after = reference.to_flax_names(student_config, dict(student.state_dict()))
    reference.assert_same_step("minilmv2", flax_loss, loss.item(), flax_grads, torch_grads,
                               flax_after, torch_after, before)
    for name in ("mlm_head/transform/kernel", "encoder/layers/1/intermediate/kernel"):
        np.testing.assert_array_equal(flax_after[name], before[name], err_msg=name)

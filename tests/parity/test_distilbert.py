"""DistilBERT training parity: flaxlm's `distilbert` objective against the loss of transformers'
examples/research_projects/distillation distiller.py (`Distiller.step`, at 1607444), rewritten
here in PyTorch on DistilBertForMaskedLM (student) and BertForMaskedLM (teacher) holding the same
weights, on flaxlm's own batch (its masked input and labels stand for prepare_batch_mlm's).

Upstream, with the README's weights: soft targets over every attention-mask position (or the
masked ones with --restrict_ce_to_mask), KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T))·T²;
the MLM cross-entropy over labelled positions (ignore_index -100); CosineEmbeddingLoss(mean) of
the last hidden states at the attention-mask positions. Optimizer: AdamW betas (0.9, 0.98),
eps 1e-6, no weight decay, clip_grad_norm_ 5.0.
"""

import jax
import numpy as np
import pytest
import torch

from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.models.config import preset
from flaxlm.models.param_tree import flat_names
from flaxlm.objectives.distill_bert import DistilBert, DistilBertConfig
from tests.parity import reference
from tests.parity.conftest import SEQ_LEN

T, ALPHA_CE, ALPHA_MLM, ALPHA_COS = 2.0, 5.0, 2.0, 1.0


def distiller_loss(student, teacher, batch, restrict_ce_to_mask: bool) -> torch.Tensor:
    ids = torch.from_numpy(batch["input_ids"].astype(np.int64))
    attention = torch.from_numpy(batch["attention_mask"].astype(np.int64))
    # prepare_batch_mlm's labels: the original token where predicted, -100 elsewhere.
    lm_labels = torch.full_like(ids, -100)
    rows, slots = np.nonzero(batch["masked_weights"])
    lm_labels[rows, batch["masked_positions"][rows, slots]] = torch.from_numpy(
        batch["masked_labels"][rows, slots].astype(np.int64))
    s_out = student(input_ids=ids, attention_mask=attention, output_hidden_states=True)
    with torch.no_grad():
        t_out = teacher(input_ids=ids, attention_mask=attention, output_hidden_states=True)
    s_logits, t_logits = s_out.logits, t_out.logits
    keep = (lm_labels > -1) if restrict_ce_to_mask else attention.bool()
    vocab = s_logits.size(-1)
    s_slct = torch.masked_select(s_logits, keep[..., None].expand_as(s_logits)).view(-1, vocab)
    t_slct = torch.masked_select(t_logits, keep[..., None].expand_as(t_logits)).view(-1, vocab)
    loss_ce = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(s_slct / T, dim=-1),
                                                        torch.softmax(t_slct / T, dim=-1)) * T ** 2
    loss_mlm = torch.nn.CrossEntropyLoss(ignore_index=-100)(s_logits.view(-1, vocab),
                                                            lm_labels.view(-1))
    s_hidden, t_hidden = s_out.hidden_states[-1], t_out.hidden_states[-1]
    dim = s_hidden.size(-1)
    real = attention.bool()[..., None].expand_as(s_hidden)
    s_h = torch.masked_select(s_hidden, real).view(-1, dim)
    t_h = torch.masked_select(t_hidden, real).view(-1, dim)
    loss_cos = torch.nn.CosineEmbeddingLoss(reduction="mean")(s_h, t_h, s_h.new_ones(s_h.size(0)))
    return ALPHA_CE * loss_ce + ALPHA_MLM * loss_mlm + ALPHA_COS * loss_cos


@pytest.mark.parametrize("restrict_ce_to_mask", [False, True],
                         ids=["ce-every-token", "ce-restricted-to-mask"])
def test_distilbert_loss_and_one_adamw_step_match_distiller(wp_tokenizer_dir, mlm_batch,
                                                            restrict_ce_to_mask):
    tok = load_tokenizer(wp_tokenizer_dir)
    shape = dict(vocab_size=tok.vocab_size, hidden_size=32, num_heads=2, intermediate_size=48,
                 pad_token_id=tok.pad_id, max_position_embeddings=SEQ_LEN, layer_norm_eps=1e-12,
                 hidden_dropout=0.0, attention_dropout=0.0)
    student_config = preset("tiny", arch="distilbert", type_vocab_size=0, **shape)
    teacher_config = preset("tiny", arch="bert", num_layers=3, type_vocab_size=2, **shape)
    objective = DistilBert(
        DistilBertConfig(temperature=T, alpha_ce=ALPHA_CE, alpha_mlm=ALPHA_MLM, alpha_cos=ALPHA_COS,
                         teacher_layers="", restrict_ce_to_mask=restrict_ce_to_mask))
    objective.teacher_config = teacher_config
    step = reference.Step(b2=0.98, eps=1e-6, weight_decay=0.0, max_grad_norm=5.0)
    program = reference.flax_program(objective, student_config, step)
    key = jax.random.key_data(jax.random.key(2))
    params = reference.noisy_params(jax.device_get(program.init_state(key)["params"]), 2)
    frozen = reference.noisy_params(jax.device_get(program.init_frozen(key)), 3)
    before = {k: np.asarray(v) for k, v in flat_names(params).items()}
    flax_loss, flax_grads, flax_after = reference.flax_step(program, params, frozen, mlm_batch)

    student = reference.torch_model(student_config, before)
    teacher_flat = {
        k.removeprefix("teacher/"): np.asarray(v)
        for k, v in flat_names(frozen).items()
    }
    teacher = reference.torch_model(teacher_config, teacher_flat)
    loss = distiller_loss(student, teacher, mlm_batch, restrict_ce_to_mask)
    loss.backward()
    named = dict(student.named_parameters())
    torch_grads = reference.to_flax_names(student_config, {
        k: (p.grad if p.grad is not None else torch.zeros_like(p))
        for k, p in named.items()
    })
    reference.adamw_step(named, step, torch_clip=True)
    torch_after = reference.to_flax_names(student_config, dict(student.state_dict()))
    reference.assert_same_step(f"distilbert restrict_ce_to_mask={restrict_ce_to_mask}", flax_loss,
                               loss.item(), flax_grads, torch_grads, flax_after, torch_after,
                               before)

"""MLM training parity: flaxlm's `mlm` objective against BERT's masked-LM loss written in PyTorch
from google-research/bert run_pretraining.py (`get_masked_lm_output`, lines 240-282 at eedf571),
on transformers' BertForMaskedLM holding the same weights, on flaxlm's own batch.

Upstream, per prediction slot: log-softmax of the head's logits at `masked_lm_positions`,
-log p(label); loss = Σ weights · loss / (Σ weights + 1e-5). flaxlm divides by max(Σ weights, 1):
the two differ by 1e-5 / Σ weights relative (under 1e-6 here), inside the bar.
"""

import jax
import numpy as np
import torch

from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.models.config import preset
from flaxlm.models.param_tree import flat_names
from flaxlm.objectives.mlm import MaskedLM
from tests.parity import reference
from tests.parity.conftest import SEQ_LEN


def bert_masked_lm_loss(model, batch) -> torch.Tensor:
    """get_masked_lm_output: gather the sequence output at the positions, transform, tied
    projection + bias, log-softmax, weighted mean with the +1e-5 denominator."""
    ids, mask, types = (torch.from_numpy(batch[k].astype(np.int64))
                        for k in ("input_ids", "attention_mask", "token_type_ids"))
    sequence_BxLxD = model.bert(input_ids=ids, attention_mask=mask,
                                token_type_ids=types).last_hidden_state
    positions_BxM = torch.from_numpy(batch["masked_positions"].astype(np.int64))
    gathered_BxMxD = torch.gather(sequence_BxLxD, 1,
                                  positions_BxM[..., None].expand(-1, -1, sequence_BxLxD.shape[-1]))
    log_probs_BxMxV = torch.log_softmax(model.cls(gathered_BxMxD), dim=-1)
    labels_BxM = torch.from_numpy(batch["masked_labels"].astype(np.int64))
    weights_BxM = torch.from_numpy(batch["masked_weights"])
    per_slot_BxM = -torch.gather(log_probs_BxMxV, -1, labels_BxM[..., None])[..., 0]
    return torch.sum(weights_BxM * per_slot_BxM) / (torch.sum(weights_BxM) + 1e-5)


def test_mlm_loss_and_one_adamw_step_match_bert(wp_tokenizer_dir, two_segment_batch):
    """On two-segment rows, so token type 1 trains (its embedding row gets a gradient)."""
    mlm_batch = two_segment_batch
    tok = load_tokenizer(wp_tokenizer_dir)
    config = preset("tiny", arch="bert", vocab_size=tok.vocab_size, hidden_size=32, num_heads=2,
                    intermediate_size=48, type_vocab_size=2, pad_token_id=tok.pad_id,
                    max_position_embeddings=SEQ_LEN, layer_norm_eps=1e-12, hidden_dropout=0.0,
                    attention_dropout=0.0)
    # BERT's optimization.py: weight decay 0.01, eps 1e-6, clip at 1.0 (its AdamWeightDecay
    # has no bias correction; the recipes flaxlm follows step with bias-corrected AdamW).
    step = reference.Step(weight_decay=0.01, eps=1e-6, max_grad_norm=1.0)
    program = reference.flax_program(MaskedLM(), config, step)
    params = reference.noisy_params(
        jax.device_get(program.init_state(jax.random.key_data(jax.random.key(1)))["params"]), 1)
    before = {k: np.asarray(v) for k, v in flat_names(params).items()}
    flax_loss, flax_grads, flax_after = reference.flax_step(program, params, {}, mlm_batch)

    model = reference.torch_model(config, before)
    loss = bert_masked_lm_loss(model, mlm_batch)
    loss.backward()
    named = dict(model.named_parameters())
    torch_grads = reference.to_flax_names(config, {
        k: p.grad
        for k, p in named.items() if p.grad is not None
    }
                                          | {
                                              k: torch.zeros_like(p)
                                              for k, p in named.items() if p.grad is None
                                          })
    reference.adamw_step(named, step)
    torch_after = reference.to_flax_names(config, dict(model.state_dict()))
    assert np.abs(torch_grads["encoder/embeddings/token_type/embedding"][1]).max() > 0
    reference.assert_same_step("mlm", flax_loss, loss.item(), flax_grads, torch_grads, flax_after,
                               torch_after, before)

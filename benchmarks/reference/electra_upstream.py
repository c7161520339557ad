"""ELECTRA's pre-training loss in PyTorch, written from google-research/electra (commit 8a46635),
not from flaxlm: the reference that tests/parity/test_electra_parity.py and
benchmarks/electra_side_by_side.py hold flaxlm's `electra` objective against.

The towers are transformers' `ElectraForMaskedLM` (generator) and `ElectraForPreTraining`
(discriminator); everything between them is upstream's code read line by line:
  * `scatter_update` — `pretrain/pretrain_helpers.py:62-115` (updates at index 0 ignored,
    duplicated positions averaged);
  * `generator_loss` — `run_pretraining.py:164-181` (`_get_masked_lm_output`: the generator's
    sequence output gathered at the masked positions, then its MLM head) and `:271-285`
    (`get_softmax_output`: Σ w · −log p(label) / (Σ w + 1e-6)); `uniform_generator` gives
    all-zero logits (`:167-173`);
  * `fake_data` — `run_pretraining.py:220-241` (`_get_fake_data`: unmask, divide the logits by
    the temperature, `disallow_correct` subtracts 1000 at the original token,
    `sample_from_softmax`, scatter the samples, label = masked and changed) with
    `pretrain_helpers.py:222-229` (Gumbel noise −log(−log(u + 1e-9) + 1e-9) added to the logits);
  * `discriminator_loss` — `run_pretraining.py:183-218` (dense + activation + dense to one logit,
    sigmoid cross-entropy weighted by `input_mask`, Σ / (1e-6 + Σ input_mask));
  * total = gen_weight · generator + disc_weight · discriminator (`run_pretraining.py:96-108`,
    weights 1 and 50 in `configure_pretraining.py:38-39`).

Batches use upstream's names for what flaxlm's pipeline gives: `input_ids` (masked),
`input_mask`, `segment_ids`, `masked_lm_positions`, `masked_lm_ids`, `masked_lm_weights`.
Shapes: B batch, L length, N prediction slots, V vocabulary.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F


def upstream_batch(batch: Mapping) -> dict[str, torch.Tensor]:
    """flaxlm's batch arrays under upstream's feature names, as int64 / fp32 tensors."""
    names = {
        "input_ids": "input_ids",
        "attention_mask": "input_mask",
        "token_type_ids": "segment_ids",
        "masked_positions": "masked_lm_positions",
        "masked_labels": "masked_lm_ids",
        "masked_weights": "masked_lm_weights"
    }
    out = {up: torch.tensor(np.asarray(batch[ours])).long() for ours, up in names.items()}
    out["masked_lm_weights"] = out["masked_lm_weights"].float()
    return out


def gumbel_from_uniform(uniform_BxNxV: torch.Tensor) -> torch.Tensor:
    """`sample_from_softmax`'s noise (pretrain_helpers.py:225-227)."""
    return -torch.log(-torch.log(uniform_BxNxV + 1e-9) + 1e-9)


def gather_positions(sequence: torch.Tensor, positions_BxN: torch.Tensor) -> torch.Tensor:
    """pretrain_helpers.py:33-59, for [B, L] or [B, L, D]."""
    if sequence.dim() == 2:
        return torch.gather(sequence, 1, positions_BxN)
    index = positions_BxN[..., None].expand(-1, -1, sequence.shape[-1])
    return torch.gather(sequence, 1, index)


def scatter_update(sequence_BxL: torch.Tensor, updates_BxN: torch.Tensor,
                   positions_BxN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(updated sequence, updates_mask) of int sequences as pretrain_helpers.py:62-115: updates
    to index 0 are ignored; a position given k times receives the floor of the mean of its k
    updates."""
    b, length = sequence_BxL.shape
    summed = torch.zeros(b, length, dtype=torch.long).scatter_add_(1, positions_BxN,
                                                                   updates_BxN.long())
    count = torch.zeros(b, length, dtype=torch.long).scatter_add_(1, positions_BxN,
                                                                  torch.ones_like(positions_BxN))
    count[:, 0] = 0  # not_first_token
    updates = torch.div(summed, torch.clamp(count, min=1), rounding_mode="floor")
    mask = torch.clamp(count, max=1)
    return (1 - mask) * sequence_BxL + mask * updates, mask


def generator_logits(generator, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """logits_BxNxV at the masked positions (`_get_masked_lm_output` + `get_token_logits`)."""
    sequence_BxLxD = generator.electra(input_ids=inputs["input_ids"],
                                       attention_mask=inputs["input_mask"],
                                       token_type_ids=inputs["segment_ids"]).last_hidden_state
    relevant_BxNxD = gather_positions(sequence_BxLxD, inputs["masked_lm_positions"])
    return generator.generator_lm_head(generator.generator_predictions(relevant_BxNxD))


def softmax_loss(logits_BxNxV, targets_BxN, weights_BxN) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-slot −log p(label)) as `get_softmax_output`."""
    log_probs = F.log_softmax(logits_BxNxV.float(), dim=-1)
    oh_labels = F.one_hot(targets_BxN, logits_BxNxV.shape[-1]).float()
    label_log_probs = -(log_probs * oh_labels).sum(-1)
    return (weights_BxN * label_log_probs).sum() / (weights_BxN.sum() + 1e-6), label_log_probs


def fake_data(inputs: Mapping[str, torch.Tensor], mlm_logits_BxNxV: torch.Tensor,
              gumbel_BxNxV: torch.Tensor, *, temperature: float = 1.0,
              disallow_correct: bool = False) -> dict[str, torch.Tensor]:
    """`_get_fake_data`: the unmasked ids, the samples, the corrupted ids and is-fake labels."""
    positions = inputs["masked_lm_positions"]
    unmasked_BxL, _ = scatter_update(inputs["input_ids"], inputs["masked_lm_ids"], positions)
    logits = mlm_logits_BxNxV.detach().float() / temperature
    if disallow_correct:
        logits = logits - 1000.0 * F.one_hot(inputs["masked_lm_ids"], logits.shape[-1]).float()
    sampled_BxN = torch.argmax(torch.softmax(logits + gumbel_BxNxV, -1), -1)
    updated_BxL, masked_BxL = scatter_update(unmasked_BxL, sampled_BxN, positions)
    labels_BxL = masked_BxL * (1 - (updated_BxL == unmasked_BxL).long())
    return {
        "unmasked_ids": unmasked_BxL,
        "sampled_ids": sampled_BxN,
        "input_ids": updated_BxL,
        "is_fake": labels_BxL
    }


def discriminator_output(discriminator, inputs, fake: Mapping[str, torch.Tensor]):
    """(loss, logits_BxL) as `_get_discriminator_output`."""
    sequence_BxLxD = discriminator.electra(input_ids=fake["input_ids"],
                                           attention_mask=inputs["input_mask"],
                                           token_type_ids=inputs["segment_ids"]).last_hidden_state
    logits_BxL = discriminator.discriminator_predictions(sequence_BxLxD).float()
    weights = inputs["input_mask"].float()
    losses = F.binary_cross_entropy_with_logits(logits_BxL, fake["is_fake"].float(),
                                                reduction="none") * weights
    return losses.sum() / (1e-6 + weights.sum()), logits_BxL


def electra_loss(generator, discriminator, inputs: Mapping[str, torch.Tensor],
                 gumbel_BxNxV: torch.Tensor, *, temperature: float = 1.0,
                 disallow_correct: bool = False, uniform_generator: bool = False,
                 gen_weight: float = 1.0, disc_weight: float = 50.0) -> dict[str, torch.Tensor]:
    """`PretrainingModel.total_loss` and its parts for one batch and one draw of noise."""
    logits_BxNxV = generator_logits(generator, inputs)
    if uniform_generator:
        logits_BxNxV = torch.zeros_like(logits_BxNxV)
    gen_loss, _ = softmax_loss(logits_BxNxV, inputs["masked_lm_ids"], inputs["masked_lm_weights"])
    fake = fake_data(inputs, logits_BxNxV, gumbel_BxNxV, temperature=temperature,
                     disallow_correct=disallow_correct)
    disc_loss, disc_logits_BxL = discriminator_output(discriminator, inputs, fake)
    return {
        "loss": gen_weight * gen_loss + disc_weight * disc_loss,
        "generator_loss": gen_loss,
        "discriminator_loss": disc_loss,
        "generator_logits": logits_BxNxV,
        "disc_logits": disc_logits_BxL,
        **fake
    }


def share_embeddings(generator, discriminator) -> None:
    """Upstream builds both towers' embeddings under one "electra/embeddings" scope
    (model/modeling.py:187-218 with `untied_embeddings=False`): word, position and token-type
    tables and their LayerNorm are one set of variables. The generator's output layer is that
    word table (`get_token_logits`: matmul with `model.get_embedding_table()`)."""
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight


def decay_groups(generator, discriminator, weight_decay: float) -> list[dict]:
    """AdamW groups: every parameter once (shared ones counted once), no decay on LayerNorm and
    biases (`optimization.py:56` exclude_from_weight_decay)."""
    named = {}
    for model in (discriminator, generator):
        for name, p in model.named_parameters():
            named.setdefault(id(p), (name, p))
    skip = ("LayerNorm", "layer_norm", "bias")
    decay = [p for n, p in named.values() if not any(s in n for s in skip)]
    no_decay = [p for n, p in named.values() if any(s in n for s in skip)]
    return [{
        "params": decay,
        "weight_decay": weight_decay
    }, {
        "params": no_decay,
        "weight_decay": 0.0
    }]

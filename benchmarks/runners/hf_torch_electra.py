"""ELECTRA pre-training in a straightforward transformers (PyTorch) loop: the "electra" objective's
baseline.

`ElectraForMaskedLM` (generator) and `ElectraForPreTraining` (discriminator) from random-weight
configs, the discriminator's embedding module (word, position, token-type embeddings, LayerNorm)
assigned to the generator so both losses train one table, the generator's `generator_lm_head`
tied to its word embeddings as transformers ties it. A step: the generator's own MLM loss (logits
at every position, cross-entropy where `labels != -100`); under `torch.no_grad`, one token sampled
at each masked position by Gumbel-max over logits / temperature; the discriminator's own loss
(binary cross-entropy over `attention_mask` positions) with "replaced" = the sample differs from
the original; loss = generator + 50 × discriminator; backward, global-norm clipping at 1.0 and
AdamW as in benchmarks/runners/hf_torch.py.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.objectives import mlm_batch
from benchmarks.runners.shared import baseline_adamw, timed_steps


def electra_configs(spec: dict):
    """(discriminator, generator) `ElectraConfig`s; the generator as flaxlm derives it
    (flaxlm/models/electra.py `generator_config`): hidden × fraction, same depth, FFN 4 × hidden,
    max(1, hidden // 64) heads, the discriminator's embedding width."""
    from transformers import ElectraConfig
    m = spec["model"]
    common = dict(vocab_size=spec["vocab"], embedding_size=m.get("embedding", m["hidden"]),
                  num_hidden_layers=m["layers"], max_position_embeddings=512, type_vocab_size=2,
                  pad_token_id=0, layer_norm_eps=1e-12, hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=spec.get("attention_dropout", 0.1))
    hidden = int(round(m["hidden"] * spec["generator_hidden_fraction"]))
    discriminator = ElectraConfig(hidden_size=m["hidden"], num_attention_heads=m["heads"],
                                  intermediate_size=m["ffn"], **common)
    generator = ElectraConfig(hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                              intermediate_size=4 * hidden, **common)
    return discriminator, generator


class TorchElectraStep:
    def __init__(self, spec: dict):
        import torch
        import transformers
        from transformers import ElectraForMaskedLM, ElectraForPreTraining

        torch.set_num_threads(spec["threads"])
        torch.manual_seed(0)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.temperature, self.discriminator_weight = 1.0, 50.0
        disc_config, gen_config = electra_configs(spec)
        self.discriminator = ElectraForPreTraining(disc_config).to(self.device).train()
        self.generator = ElectraForMaskedLM(gen_config).to(self.device).train()
        # One embedding module for both towers; the generator's head stays tied to its table.
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = (
            self.discriminator.electra.embeddings.word_embeddings.weight)
        named = {
            id(p): (n, p)
            for model in (self.discriminator, self.generator)
            for n, p in model.named_parameters()
        }  # shared tensors once
        self.params = [p for _, p in named.values()]
        self.opt = baseline_adamw(named.values())
        b = mlm_batch(np.random.default_rng(0), batch=spec["batch"], seq=spec["seq"],
                      vocab=spec["vocab"])
        self.inputs = {
            k: torch.as_tensor(b[k]).long().to(self.device)
            for k in ("input_ids", "attention_mask", "token_type_ids", "labels")
        }
        masked = self.inputs["labels"] != -100
        self.masked = masked
        self.original = torch.where(masked, self.inputs["labels"], self.inputs["input_ids"])
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device == "cuda" else None)
        # `compile`: both towers through torch.compile (inductor), the shared modules as they are.
        compile_ = torch.compile if spec.get("compile") else (lambda model: model)
        self.generator_forward = compile_(self.generator)
        self.discriminator_forward = compile_(self.discriminator)
        t = time.perf_counter()
        self._step()
        compile_s = time.perf_counter() - t
        for _ in range(spec["warmup"]):
            self._step()
        self.info = {
            "compile_s": compile_s,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "device": self.device,
            "torch_threads": torch.get_num_threads(),
            "params": len(self.params),
            "param_count": sum(p.numel() for p in self.params)
        }

    def _loss(self):
        torch = self.torch
        gen = self.generator_forward(**self.inputs)
        with torch.no_grad():
            logits_NxV = gen.logits[self.masked].float() / self.temperature
            uniform = torch.rand_like(logits_NxV).clamp_(1e-9, 1.0 - 1e-9)
            sampled_N = torch.argmax(logits_NxV - torch.log(-torch.log(uniform)), dim=-1)
            corrupted = self.inputs["input_ids"].clone()
            corrupted[self.masked] = sampled_N
            replaced = ((corrupted != self.original) & (self.inputs["attention_mask"] > 0)).long()
        disc = self.discriminator_forward(input_ids=corrupted,
                                          attention_mask=self.inputs["attention_mask"],
                                          token_type_ids=self.inputs["token_type_ids"],
                                          labels=replaced)
        return gen.loss + self.discriminator_weight * disc.loss

    def _step(self) -> float:
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        if self.autocast:
            with self.autocast:
                loss = self._loss()
        else:
            loss = self._loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return loss.detach().item()

    def run(self, n: int) -> dict:
        return timed_steps(self._step, n)


def build(spec: dict) -> TorchElectraStep:
    return TorchElectraStep(spec)

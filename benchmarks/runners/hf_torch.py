"""transformers (PyTorch) training steps: `BertForMaskedLM` / `XLMRobertaForMaskedLM` for the
"mlm" objective, `BertForTokenClassification` / `XLMRobertaForTokenClassification` for
"token_classification"; ELECTRA's generator + discriminator pair is in hf_torch_electra.py.

Random weights from a config (no hub). HF's own losses: MLM logits at every position, token
classification logits at every position, each cross-entropy where `labels != -100`. AdamW as flaxlm's: lr 1e-4, wd 0.01 except biases/LayerNorm, eps 1e-6,
global-norm clipping at 1.0. `compile=True` wraps the model in `torch.compile` (inductor).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.objectives import mlm_batch, token_batch
from benchmarks.runners.hf_torch_electra import TorchElectraStep
from benchmarks.runners.shared import baseline_adamw, timed_steps


def hf_config(spec: dict):
    m = spec["model"]
    common = dict(vocab_size=spec["vocab"], hidden_size=m["hidden"], num_hidden_layers=m["layers"],
                  num_attention_heads=m["heads"], intermediate_size=m["ffn"],
                  hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=spec.get("attention_dropout",
                                                        0.1), num_labels=spec.get("num_labels", 2))
    if spec["arch"] == "distilbert":
        from transformers import DistilBertConfig
        return DistilBertConfig(vocab_size=spec["vocab"], dim=m["hidden"], n_layers=m["layers"],
                                n_heads=m["heads"], hidden_dim=m["ffn"], dropout=0.1,
                                attention_dropout=common["attention_probs_dropout_prob"],
                                max_position_embeddings=512, pad_token_id=0)
    if spec["arch"] == "xlmr":
        from transformers import XLMRobertaConfig
        return XLMRobertaConfig(max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                                bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **common)
    from transformers import BertConfig
    return BertConfig(max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
                      layer_norm_eps=1e-12, **common)


class TorchStep:
    def __init__(self, spec: dict):
        import torch
        import transformers
        from transformers import (BertForMaskedLM, BertForTokenClassification,
                                  DistilBertForMaskedLM, XLMRobertaForMaskedLM,
                                  XLMRobertaForTokenClassification)

        torch.set_num_threads(spec["threads"])
        torch.manual_seed(0)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        token_classification = spec.get("objective") == "token_classification"
        classes = ((XLMRobertaForTokenClassification,
                    BertForTokenClassification) if token_classification else
                   (XLMRobertaForMaskedLM, BertForMaskedLM))
        cls = classes[0] if spec["arch"] == "xlmr" else classes[1]
        if spec["arch"] == "distilbert" and not token_classification:
            cls = DistilBertForMaskedLM
        self.model = cls(hf_config(spec)).to(self.device).train()
        self.opt = baseline_adamw(self.model.named_parameters())
        self.forward = torch.compile(self.model) if spec.get("compile") else self.model
        if token_classification:
            b = token_batch(np.random.default_rng(0), batch=spec["batch"], seq=spec["seq"],
                            vocab=spec["vocab"], num_labels=spec["num_labels"])
            b = dict(b, labels=b["hf_labels"])
        else:
            b = mlm_batch(np.random.default_rng(0), batch=spec["batch"], seq=spec["seq"],
                          vocab=spec["vocab"])
        self.inputs = {
            k: torch.as_tensor(b[k]).long().to(self.device)
            for k in ("input_ids", "attention_mask", "token_type_ids", "labels")
        }
        if spec["arch"] in ("xlmr", "distilbert"):
            self.inputs.pop("token_type_ids")
        # bf16 autocast on an accelerator, as flaxlm runs bf16 matmuls there.
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device == "cuda" else None)
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
            "attn_implementation": getattr(self.model.config, "_attn_implementation", "")
        }

    def _step(self) -> float:
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        if self.autocast:
            with self.autocast:
                loss = self.forward(**self.inputs).loss
        else:
            loss = self.forward(**self.inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return loss.detach().item()

    def run(self, n: int) -> dict:
        return timed_steps(self._step, n)


def build(spec: dict):
    if spec.get("objective") == "electra":  # two models and a sampling step: its own runner
        return TorchElectraStep(spec)
    return TorchStep(spec)

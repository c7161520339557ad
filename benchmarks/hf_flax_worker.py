"""transformers 4.57's `FlaxBertForMaskedLM` / `FlaxXLMRobertaForMaskedLM` train step.

Runs under a throwaway virtualenv (transformers 5 has no Flax classes; this is never a flaxlm
dependency): `<venv>/bin/python -m benchmarks.hf_flax_worker`, spec on stdin (protocol.py).
The step is HF's own run_mlm_flax.py recipe, jitted with donated params and optimizer state:
logits at every position, cross-entropy where `labels != -100`. AdamW as flaxlm's.
"""

from __future__ import annotations

import time

from benchmarks.common import configure_threads
from benchmarks.protocol import serve
from benchmarks.runners.shared import timed_steps


class HFFlaxStep:
    def __init__(self, spec: dict):
        import numpy as np
        configure_threads(spec["threads"])
        import jax
        import jax.numpy as jnp
        import optax
        import transformers
        from transformers import (BertConfig, FlaxBertForMaskedLM, FlaxXLMRobertaForMaskedLM,
                                  XLMRobertaConfig)

        from benchmarks.objectives import mlm_batch

        m = spec["model"]
        common = dict(vocab_size=spec["vocab"], hidden_size=m["hidden"],
                      num_hidden_layers=m["layers"], num_attention_heads=m["heads"],
                      intermediate_size=m["ffn"], hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1)
        on_cpu = jax.devices()[0].platform == "cpu"
        dtype = jnp.float32 if on_cpu else jnp.bfloat16
        if spec["arch"] == "xlmr":
            config = XLMRobertaConfig(max_position_embeddings=514, type_vocab_size=1,
                                      pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                      layer_norm_eps=1e-5, **common)
            model = FlaxXLMRobertaForMaskedLM(config, seed=0, dtype=dtype)
        else:
            config = BertConfig(max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
                                layer_norm_eps=1e-12, **common)
            model = FlaxBertForMaskedLM(config, seed=0, dtype=dtype)

        def decay_mask(params):
            flat = {
                path: not (path[-1] == "bias" or path[-2:] == ("LayerNorm", "scale"))
                for path in _flatten(params)
            }
            return _unflatten(flat)

        tx = optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.adamw(1e-4, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, mask=decay_mask))
        b = mlm_batch(np.random.default_rng(0), batch=spec["batch"], seq=spec["seq"],
                      vocab=spec["vocab"])
        self.batch = {
            k: jnp.asarray(b[k].astype(np.int32))
            for k in ("input_ids", "attention_mask", "token_type_ids", "labels")
        }

        def train_step(params, opt_state, batch, rng):
            dropout_rng = jax.random.fold_in(rng, 0)

            def loss_fn(p):
                labels = batch["labels"]
                logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                               params=p, dropout_rng=dropout_rng, train=True)[0]
                weights = (labels != -100).astype(jnp.float32)
                xent = optax.softmax_cross_entropy_with_integer_labels(
                    logits.astype(jnp.float32), jnp.maximum(labels, 0))
                return (xent * weights).sum() / weights.sum()

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.jax = jax
        self.step_fn = jax.jit(train_step, donate_argnums=(0, 1))
        self.params = model.params
        self.opt_state = tx.init(self.params)
        self.rng = jax.random.PRNGKey(0)
        t = time.perf_counter()
        self._step()
        compile_s = time.perf_counter() - t
        for _ in range(spec["warmup"]):
            self._step()
        self.info = {
            "compile_s": compile_s,
            "transformers": transformers.__version__,
            "jax": jax.__version__,
            "platform": jax.devices()[0].platform
        }

    def _step(self) -> float:
        self.rng, key = self.jax.random.split(self.rng)
        self.params, self.opt_state, loss = self.step_fn(self.params, self.opt_state, self.batch,
                                                         key)
        return float(loss)

    def run(self, n: int) -> dict:
        return timed_steps(self._step, n)


def _flatten(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flatten(v, prefix + (k, ))
        else:
            yield prefix + (k, )


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return out


if __name__ == "__main__":
    serve(HFFlaxStep)

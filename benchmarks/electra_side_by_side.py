"""Does ELECTRA learn at this size? An independent PyTorch ELECTRA trained on the very batches that
`flaxlm train` makes from the same config, evaluated with the same held-out metrics.

The towers are transformers' `ElectraForMaskedLM` and `ElectraForPreTraining` from random weights
(transformers' own initialisation, not flaxlm's), sharing one embedding module; the loss is
benchmarks/reference/electra_upstream.py (google-research/electra's, read from its source); the
optimizer is torch's AdamW with the run's lr, betas, eps, weight decay (none on LayerNorm and
biases), global-norm clipping, warmup and linear decay — what `flaxlm train` does with the same
config. Batches come from flaxlm's pipeline with the config's seed, so both trainers see the same
masked rows in the same order; only the sampling noise and the initial weights differ.

Held-out metrics every `train.eval_every` steps on `data.eval_files` (metrics.jsonl in
--workdir, named as flaxlm's `eval_*`): discriminator AUC over every real token, accuracy,
precision and recall of "replaced", generator accuracy at the slots whose input was [MASK] and at
the slots kept as themselves, how often the sample equals the original, and the AUC that token
identity alone reaches on the same samples (`eval_identity_auc`).

  cpuslot python -m benchmarks.electra_side_by_side --config configs/electra_tiny.py \
      --workdir runs/side/torch-t1 --config.data.tokenizer=runs/side/tok

With --exported DIR (a `flaxlm export` of an ELECTRA run) it trains nothing and prints the same
held-out metrics for that pair, so a flaxlm run is scored by this very code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from flaxlm import jax_platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _models(model_config, generator_config):
    import transformers

    def hf(c):
        return transformers.ElectraConfig(
            vocab_size=c.vocab_size, embedding_size=c.embedding_dim, hidden_size=c.hidden_size,
            num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
            intermediate_size=c.intermediate_size, hidden_act="gelu",
            hidden_dropout_prob=c.hidden_dropout, attention_probs_dropout_prob=c.attention_dropout,
            max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
            layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id)

    discriminator = transformers.ElectraForPreTraining(hf(model_config))
    generator = transformers.ElectraForMaskedLM(hf(generator_config))
    return generator, discriminator


def _auc(scores, positive) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(positive,
                               scores)) if 0 < positive.sum() < positive.size else float("nan")


def evaluate(generator, discriminator, eval_batches, objective_config, seed: int) -> dict:
    import numpy as np
    import torch

    from benchmarks.reference import electra_upstream as up

    generator.eval(), discriminator.eval()
    rng = torch.Generator().manual_seed(seed)
    scores, labels, seen_ids = [], [], []
    n = {
        k: 0.0
        for k in ("slots", "masked", "masked_right", "kept_right", "sampled_right", "tokens",
                  "fake", "pred", "true_pos", "right", "gen_loss", "disc_loss")
    }
    with torch.no_grad():
        for batch in eval_batches:
            inputs = up.upstream_batch(batch)
            shape = (*inputs["masked_lm_ids"].shape, generator.config.vocab_size)
            noise = up.gumbel_from_uniform(torch.rand(shape, generator=rng))
            out = up.electra_loss(generator, discriminator, inputs, noise,
                                  temperature=objective_config.temperature,
                                  disallow_correct=objective_config.disallow_correct,
                                  uniform_generator=objective_config.uniform_generator)
            w = inputs["masked_lm_weights"] > 0
            ids = inputs["masked_lm_ids"]
            seen = up.gather_positions(inputs["input_ids"], inputs["masked_lm_positions"])
            changed = (seen != ids) & w
            right = out["generator_logits"].argmax(-1) == ids
            real = inputs["input_mask"] > 0
            fake = out["is_fake"] > 0
            pred = out["disc_logits"] > 0
            n["slots"] += w.sum().item()
            n["masked"] += changed.sum().item()
            n["masked_right"] += (right & changed).sum().item()
            n["kept_right"] += (right & w & ~changed).sum().item()
            n["sampled_right"] += ((out["sampled_ids"] == ids) & w).sum().item()
            n["tokens"] += real.sum().item()
            n["fake"] += (fake & real).sum().item()
            n["pred"] += (pred & real).sum().item()
            n["true_pos"] += (pred & fake & real).sum().item()
            n["right"] += ((pred == fake) & real).sum().item()
            n["gen_loss"] += out["generator_loss"].item() * w.sum().item()
            n["disc_loss"] += out["discriminator_loss"].item() * real.sum().item()
            scores.append(out["disc_logits"][real].numpy())
            labels.append(fake[real].numpy())
            seen_ids.append(out["input_ids"][real].numpy())
    generator.train(), discriminator.train()
    return {
        "eval_generator_loss": n["gen_loss"] / n["slots"],
        "eval_generator_accuracy": (n["masked_right"] + n["kept_right"]) / n["slots"],
        "eval_generator_accuracy_masked": n["masked_right"] / max(n["masked"], 1),
        "eval_generator_accuracy_kept": n["kept_right"] / max(n["slots"] - n["masked"], 1),
        "eval_sampled_accuracy": n["sampled_right"] / n["slots"],
        "eval_discriminator_loss": n["disc_loss"] / n["tokens"],
        "eval_discriminator_accuracy": n["right"] / n["tokens"],
        "eval_replaced_rate": n["fake"] / n["tokens"],
        "eval_replaced_precision": n["true_pos"] / max(n["pred"], 1),
        "eval_replaced_recall": n["true_pos"] / max(n["fake"], 1),
        "eval_replaced_auc": _auc(np.concatenate(scores), np.concatenate(labels)),
        "eval_identity_auc": _identity_auc(np.concatenate(seen_ids), np.concatenate(labels)),
    }


def _identity_auc(ids, positive) -> float:
    """The AUC that token identity alone reaches on these samples: each token scored by the
    replaced rate of its id among the other held-out tokens (leave-one-out). A discriminator
    above it uses context; at it, only which tokens the generator tends to propose."""
    import numpy as np
    count = np.bincount(ids)
    fakes = np.bincount(ids, weights=positive.astype(np.float64), minlength=count.size)
    others = count[ids] - 1
    rate = np.where(others > 0, (fakes[ids] - positive) / np.maximum(others, 1), positive.mean())
    return _auc(rate, positive)


def main(argv: list[str] | None = None) -> None:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--exported", help="only evaluate this `flaxlm export` pair (a flaxlm run's "
        "checkpoint) with the same code, sampling noise and held-out batches")
    args, overrides = ap.parse_known_args(argv)

    import torch

    from benchmarks.reference import electra_upstream as up
    from flaxlm import run_config
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.objectives.electra import Electra, ElectraConfig
    from flaxlm.run.protocol import DataContext

    config = run_config.load(args.config, overrides)
    if not config.data.tokenizer:
        sys.exit("set --config.data.tokenizer=DIR (the tokenizer `flaxlm train` used)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.data.tokenizer)
    model_config = config.model(tokenizer.vocab_size, tokenizer.pad_id)
    objective = Electra(ElectraConfig(**config.objective_sections["electra"]))
    o = objective.config
    generator, discriminator = _models(model_config, objective.generator_config(model_config))
    up.share_embeddings(generator, discriminator)
    optim = config.optim
    opt = torch.optim.AdamW(up.decay_groups(generator, discriminator, optim.weight_decay),
                            lr=optim.learning_rate, betas=(optim.b1, optim.b2), eps=optim.eps)
    warmup, total = optim.warmup_steps, optim.total_steps

    def lr_factor(step: int) -> float:  # flaxlm/optim.py's warmup + linear decay to 0
        if step < warmup:
            return step / warmup
        return max(0.0, 1.0 - (step - warmup) / max(total - warmup, 1))

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    params = [p for g in opt.param_groups for p in g["params"]]

    ctx = DataContext(config.data, tokenizer, config.seed, config.loop.batch_size,
                      token_types=model_config.type_vocab_size > 0,
                      type_vocab_size=model_config.type_vocab_size)  # as flaxlm/train.py
    stream = objective.train_batches(ctx, 0)
    eval_batches = objective.eval_batches(ctx)
    if args.exported:
        import transformers

        from flaxlm.convert.electra import GENERATOR_SUBDIR
        discriminator = transformers.ElectraForPreTraining.from_pretrained(args.exported)
        generator = transformers.ElectraForMaskedLM.from_pretrained(
            os.path.join(args.exported, GENERATOR_SUBDIR))
        print(
            json.dumps({
                k: round(v, 4)
                for k, v in evaluate(generator, discriminator, eval_batches, o,
                                     config.seed).items()
            }), flush=True)
        return
    os.makedirs(args.workdir, exist_ok=True)
    log = open(os.path.join(args.workdir, "metrics.jsonl"), "w", encoding="utf-8")
    noise_rng = torch.Generator().manual_seed(config.seed + 1)
    start = time.perf_counter()
    for step in range(1, config.loop.steps + 1):
        inputs = up.upstream_batch(next(stream))
        shape = (*inputs["masked_lm_ids"].shape, model_config.vocab_size)
        noise = up.gumbel_from_uniform(torch.rand(shape, generator=noise_rng))
        out = up.electra_loss(generator, discriminator, inputs, noise, temperature=o.temperature,
                              disallow_correct=o.disallow_correct,
                              uniform_generator=o.uniform_generator, gen_weight=o.generator_weight,
                              disc_weight=o.discriminator_weight)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, optim.max_grad_norm)
        opt.step()
        schedule.step()
        row = {"step": step, "seconds": round(time.perf_counter() - start, 1)}
        if step % config.loop.log_every == 0:
            row.update(loss=out["loss"].item(), generator_loss=out["generator_loss"].item(),
                       discriminator_loss=out["discriminator_loss"].item())
        if config.loop.eval_every and step % config.loop.eval_every == 0 or (step
                                                                             == config.loop.steps):
            row.update(evaluate(generator, discriminator, eval_batches, o, config.seed))
        if len(row) > 2:
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(
                json.dumps({
                    k: round(v, 4) if isinstance(v, float) else v
                    for k, v in row.items()
                }), flush=True)


if __name__ == "__main__":
    main()

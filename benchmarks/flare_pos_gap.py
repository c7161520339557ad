"""Probes of docs/flare.md's flaxlm-vs-PyTorch POS gap (Stage 4), on the real pruned model.

  dropout-stats  one batch (the first of flaxlm's seed-0 order), the same weights on both sides
                 (flaxlm's fresh seed-0 POS model, its classifier copied into PyTorch): loss and
                 gradients with dropout off, then N train-mode draws a side; prints the mean loss,
                 global and per-layer gradient norms with their standard errors, and how far the
                 two sides' mean gradients are apart against what N draws of noise allow.
  paired         the PyTorch loop (benchmarks/runners/conll2002_torch.py's encoding, optimizer and
                 scoring) with flaxlm's batch order (`token_classification.epoch_order`) and
                 flaxlm's fresh classifier of the same seed, logging every step's loss and
                 pre-clip gradient norm to OUT.json.
                 The other way round is `benchmarks.flare_chain converse`.

  python -m benchmarks.flare_pos_gap dropout-stats --flaxlm R/it_pruned --hf R/it_pruned_hf --draws 30
  python -m benchmarks.flare_pos_gap paired --flaxlm R/it_pruned --hf R/it_pruned_hf --seed 0 \
      --dropout 0 --out runs/torch_paired_s0_nodrop
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from flaxlm import jax_platform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UD = os.path.join(os.path.dirname(REPO), "shared", "data", "ud")
TRAIN, TEST = (os.path.join(UD, f"it_isdt-ud-{s}.conllu") for s in ("dev", "test"))
POS = [
    "--config.train.learning_rate=5e-5", "--config.finetune.epochs=3",
    "--config.train.batch_size=16", f"--config.data.train_files={TRAIN}",
    f"--config.data.eval_files={TEST}"
]
GROUPS = ("emb", *(f"L{i}" for i in range(12)), "cls")


def flaxlm_start(init_from: str, seed: int, scratch: str):
    """(experiment, fresh POS state loaded from `init_from`, HF-named tensors of its params)."""
    import jax

    from flaxlm import experiment, run_config
    from flaxlm.run import weights
    from flaxlm.run.workdir import Workdir
    config = run_config.load(os.path.join(REPO, "configs", "pos_it_isdt.py"),
                             [*POS, f"--config.init_from={init_from}", f"--config.seed={seed}"])
    exp = experiment.build(config, Workdir(scratch))
    rng = np.asarray(jax.random.key_data(jax.random.key(seed)))
    frozen = exp.program.init_frozen(rng)
    state, frozen, _ = weights.load(exp.program, exp.objective, init_from,
                                    exp.program.fresh_state(rng), frozen)
    exp.program.set_frozen(frozen)
    return exp, state, hf_named(exp, state["params"])


def hf_named(exp, params) -> dict[str, np.ndarray]:
    import jax

    from flaxlm.convert.mappings.tables import table_for
    from flaxlm.convert.mappings.tensors import to_hf
    from flaxlm.models.param_tree import flat_names
    return to_hf(table_for("bert", "token_classification"), flat_names(jax.device_get(params)),
                 exp.model_config)


def torch_model(hf_dir: str, tensors: dict, num_labels: int, dropout: float):
    from transformers import BertForTokenClassification
    model = BertForTokenClassification.from_pretrained(hf_dir, num_labels=num_labels,
                                                       hidden_dropout_prob=dropout,
                                                       attention_probs_dropout_prob=dropout)
    import torch
    model.load_state_dict({k: torch.tensor(v) for k, v in tensors.items()}, strict=False)
    return model


def _group(name: str) -> str:
    if "embeddings" in name:
        return "emb"
    return "cls" if name.startswith("classifier") else "L" + name.split(".")[3]


def _flat(grads: dict, group: str) -> np.ndarray:
    # Attention key biases get no gradient (a softmax ignores a shift of all its scores).
    return np.concatenate([
        v.ravel() for k, v in sorted(grads.items())
        if _group(k) == group and not k.endswith("key.bias")
    ]).astype(np.float64)


def _mean_se(x) -> str:
    x = np.asarray(x, np.float64)
    return f"{x.mean():.5f} ± {x.std(ddof=1) / math.sqrt(len(x)):.5f}"


def dropout_stats(args) -> None:
    import jax
    import jax.numpy as jnp
    import torch
    torch.set_num_threads(args.threads)
    exp, state, start = flaxlm_start(args.flaxlm, 0, args.scratch)
    program, objective, params = exp.program, exp.objective, state["params"]
    batch = jax.tree.map(jnp.asarray, next(objective.train_batches(exp.ctx, 0)))
    normalizers = objective.normalizers(batch)
    print(f"batch {tuple(batch['input_ids'].shape)}, "
          f"{int(batch['label_weights'].sum())} labelled tokens")

    @jax.jit
    def flaxlm_grads(params, key_data):
        key = None if key_data is None else jax.random.wrap_key_data(key_data)
        grads, sums = program._grads_and_sums(params, program.frozen, batch, normalizers, key)
        return sums["loss_sum"] / normalizers["labelled"], grads

    torch_batch = {
        k: torch.tensor(np.asarray(batch[k]), dtype=torch.long)
        for k in ("input_ids", "attention_mask", "token_type_ids")
    }
    torch_batch["labels"] = torch.tensor(
        np.where(np.asarray(batch["label_weights"]) > 0, np.asarray(batch["labels"]), -100),
        dtype=torch.long)

    def torch_grads(model, seed):
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        loss = model(**torch_batch).loss
        loss.backward()
        return loss.item(), {k: p.grad.numpy().copy() for k, p in model.named_parameters()}

    draws = {side: _Draws() for side in ("flaxlm", "PyTorch")}
    for dropout in (0.0, 0.1):
        model = torch_model(args.hf, start, exp.model_config.num_labels, dropout)
        model.train()
        for i in range(1 if dropout == 0 else args.draws):
            key = None if dropout == 0 else np.asarray(
                jax.random.key_data(jax.random.fold_in(jax.random.key(1234), i)))
            loss_f, grads_f = flaxlm_grads(params, key)
            pair = ((float(loss_f), hf_named(exp, grads_f)), torch_grads(model, 1000 + i))
            if dropout == 0:
                worst = max(
                    np.abs(pair[0][1][k] - g).max() / np.abs(g).max()
                    for k, g in pair[1][1].items() if not k.endswith("key.bias"))
                print(f"dropout off: loss flaxlm {pair[0][0]:.7f}, PyTorch {pair[1][0]:.7f}; "
                      f"largest gradient difference {worst:.1e} of its tensor's largest value")
                continue
            for side, (loss, grads) in zip(draws, pair):
                draws[side].add(loss, grads)
    _report(draws, args.draws)


class _Draws:
    """Running sums over dropout draws: losses, per-group gradient norms and gradient sums."""
    def __init__(self):
        self.losses, self.norms, self.sums = [], {g: [] for g in GROUPS}, {}

    def add(self, loss: float, grads: dict) -> None:
        self.losses.append(loss)
        for group in GROUPS:
            flat = _flat(grads, group)
            self.norms[group].append(float(np.linalg.norm(flat)))
            self.sums[group] = self.sums.get(group, 0.0) + flat

    def noise_trace(self, group: str, n: int) -> float:
        """Trace of one draw's gradient covariance over `group`, unbiased."""
        mean = self.sums[group] / n
        return (sum(x * x for x in self.norms[group]) - n * float(mean @ mean)) / (n - 1)


def _report(draws: dict, n: int) -> None:
    print(f"dropout 0.1, {n} draws a side (mean ± standard error):")
    for side, d in draws.items():
        total = [math.sqrt(sum(d.norms[g][i] ** 2 for g in GROUPS)) for i in range(n)]
        print(f"  {side}: loss {_mean_se(d.losses)}, global gradient norm {_mean_se(total)}")
    print("  group  gradient norm flaxlm | PyTorch  |mean_f - mean_t|  expected from noise")
    for group in GROUPS:
        f, t = draws["flaxlm"], draws["PyTorch"]
        gap = np.linalg.norm((f.sums[group] - t.sums[group]) / n)
        noise = math.sqrt((f.noise_trace(group, n) + t.noise_trace(group, n)) / n)
        print(f"  {group:5s}  {_mean_se(f.norms[group])} | {_mean_se(t.norms[group])}  "
              f"{gap:.5f}  {noise:.5f}")


def paired(args) -> None:
    import torch
    from transformers import AutoTokenizer, DataCollatorForTokenClassification

    from benchmarks.flare_chain import recipe_from_config
    from benchmarks.runners import conll2002_torch as loop
    from flaxlm.objectives.token_classification import epoch_order
    recipe, _ = recipe_from_config("pos", [*POS, f"--config.seed={args.seed}"])
    exp, _, start = flaxlm_start(args.flaxlm, args.seed, args.scratch)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the dropout masks
    tokenizer = AutoTokenizer.from_pretrained(args.hf)
    train, test = loop.read_conllu(TRAIN), loop.read_conllu(TEST)
    labels = sorted({x for _, ls in train for x in ls})
    label_ids = {x: i for i, x in enumerate(labels)}
    rows = [{
        k: r[k]
        for k in ("input_ids", "labels")
    } for r in loop.encode(train, tokenizer, label_ids, recipe.seq_len)]
    test_rows = loop.encode(test, tokenizer, label_ids, recipe.seq_len)
    classifier = {k: v for k, v in start.items() if k.startswith("classifier.")}
    model = torch_model(args.hf, classifier, len(labels), args.dropout)
    optimizer, schedule = loop.make_optimizer(
        model, recipe, recipe.epochs * math.ceil(len(rows) / recipe.batch_size))
    collate = DataCollatorForTokenClassification(tokenizer)
    steps, epochs = [], []
    for epoch in range(recipe.epochs):
        order = epoch_order(args.seed, epoch, len(rows))
        model.train()
        for first in range(0, len(rows), recipe.batch_size):
            loss = model(**collate([rows[i] for i in order[first:first + recipe.batch_size]])).loss
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            steps.append({"step": len(steps) + 1, "loss": loss.item(), "grad_norm": float(norm)})
        predicted = loop.predict_words(model, test_rows, test, dict(enumerate(labels)))
        epochs.append({"epoch": epoch + 1, **loop.pos_scores(test, predicted)})
        print(f"{time.strftime('%T')} {epochs[-1]}", flush=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "epochs": epochs, "steps": steps}, f, indent=1)


def main(argv=None) -> None:
    jax_platform.select()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("dropout-stats", "paired"):
        s = sub.add_parser(name)
        s.add_argument("--flaxlm", required=True, help="the pruned model's flaxlm workdir")
        s.add_argument("--hf", required=True, help="its export")
        s.add_argument("--scratch", default="runs/flare_pos_gap_wd", help="a scratch workdir")
        s.add_argument("--threads", type=int, default=2)
    sub.choices["dropout-stats"].add_argument("--draws", type=int, default=30)
    sub.choices["paired"].add_argument("--seed", type=int, default=0)
    sub.choices["paired"].add_argument("--dropout", type=float, default=0.1)
    sub.choices["paired"].add_argument("--out", required=True, help="writes OUT.json")
    args = p.parse_args(argv)
    (dropout_stats if args.command == "dropout-stats" else paired)(args)


if __name__ == "__main__":
    main()

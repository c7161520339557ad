"""Is the demo's unigram plateau flaxlm's or the task's? transformers' XLMRobertaForMaskedLM of the
demo's shape, trained in a plain PyTorch loop on the very batches flaxlm's pipeline makes.

Masking is made copy-proof (every prediction slot becomes <mask>), so held-out accuracy is the
accuracy from context alone; compare it with `flaxlm train --config configs/demo.py` under the
same overrides (docs/demo.md, "Still open").

  python -m benchmarks.mlm_plateau_torch --tokenizer runs/demo/tokenizer --lr 1e-3 --steps 3000
"""

from __future__ import annotations

import argparse
import os
import time

from flaxlm import jax_platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> None:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="a flaxlm tokenizer directory")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--eval-batches", type=int, default=20)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    import transformers

    from flaxlm import run_config
    from flaxlm.data import pipeline
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.objectives.mlm import MaskedLMConfig, masked_data

    torch.manual_seed(0)
    config = run_config.load(os.path.join(REPO, "configs", "demo.py"), [])
    tokenizer = load_tokenizer(args.tokenizer)
    os.chdir(REPO)  # the demo config names the shipped sample relative to the repository
    data = masked_data(config.data, MaskedLMConfig(mask_token_rate=1.0, random_token_rate=0.0))
    batch = config.loop.batch_size
    train = pipeline.build_train_stream(data, tokenizer, seed=config.seed, host_batch_size=batch)
    held_out = pipeline.build_eval_batches(data, tokenizer,
                                           host_batch_size=batch)[:args.eval_batches]
    m = config.model(tokenizer.vocab_size, tokenizer.pad_id)
    model = transformers.XLMRobertaForMaskedLM(
        transformers.XLMRobertaConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=m.hidden_size,
            num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
            intermediate_size=m.intermediate_size,
            max_position_embeddings=m.max_position_embeddings, pad_token_id=tokenizer.pad_id,
            hidden_dropout_prob=m.hidden_dropout, attention_probs_dropout_prob=m.attention_dropout,
            type_vocab_size=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, eps=1e-6)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, config.optim.warmup_steps,
                                                            max(args.steps, config.loop.steps))

    def loss_and_accuracy(b):
        logits_BxLxV = model(input_ids=torch.as_tensor(np.array(b["input_ids"])).long(),
                             attention_mask=torch.as_tensor(np.array(b["attention_mask"]))).logits
        rows_R, slots_R = np.nonzero(b["masked_weights"] > 0)
        logits_RxV = logits_BxLxV[rows_R, b["masked_positions"][rows_R, slots_R]]
        labels_R = torch.as_tensor(b["masked_labels"][rows_R, slots_R]).long()
        return (torch.nn.functional.cross_entropy(logits_RxV, labels_R),
                (logits_RxV.argmax(-1) == labels_R).float().mean().item())

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        model.train()
        loss, _ = loss_and_accuracy(next(train))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0:
            model.eval()
            with torch.no_grad():
                scores = [loss_and_accuracy(b) for b in held_out]
            print(
                f"step {step}: train loss {loss.item():.3f}, held-out loss "
                f"{np.mean([s[0].item() for s in scores]):.3f}, accuracy "
                f"{np.mean([s[1] for s in scores]):.4f} ({time.perf_counter() - start:.0f} s)",
                flush=True)


if __name__ == "__main__":
    main()

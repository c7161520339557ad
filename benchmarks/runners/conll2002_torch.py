"""The PyTorch side of benchmarks/conll2002_torch_vs_flaxlm.py (and of benchmarks/flare_chain.py's
POS and NER rows): CoNLL-2002 read as plain `token POS label` lines (or UD CoNLL-U, UPOS), encoded
into windows with transformers' tokenizer, fine-tuned by a plain loop of transformers' own pieces
(BertForTokenClassification, DataCollatorForTokenClassification, get_linear_schedule_with_warmup
or get_constant_schedule, torch.optim.AdamW with flaxlm's layer-wise decay), and scored word by
word with seqeval (NER) or scikit-learn (POS). The scripts run it in its own process."""

from __future__ import annotations

import math
import time


def read_conll(path: str) -> list[tuple[list[str], list[str]]]:
    """(words, labels) per sentence of a `token POS label` file (blank line between sentences)."""
    sentences, words, labels = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in list(f) + [""]:
            columns = line.split()
            if columns and columns[0] != "-DOCSTART-":
                words.append(columns[0])
                labels.append(columns[-1])
            elif not columns and words:
                sentences.append((words, labels))
                words, labels = [], []
    return sentences


def read_conllu(path: str) -> list[tuple[list[str], list[str]]]:
    """(words, UPOS tags) per sentence of a CoNLL-U file; multiword-token ranges (`3-4`) and
    empty nodes (`5.1`) are not words of the text and are skipped."""
    sentences, words, labels = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in list(f) + [""]:
            line = line.rstrip("\n")
            if line.startswith("#"):
                continue
            columns = line.split("\t")
            if len(columns) == 10:
                if columns[0].isdigit():
                    words.append(columns[1])
                    labels.append(columns[3])
            elif words:
                sentences.append((words, labels))
                words, labels = [], []
    return sentences


READERS = {"conll2002": read_conll, "conllu": read_conllu}


# -- encoding and scoring ---------------------------------------------------------------------------
def encode(sentences, tokenizer, label_ids: dict, seq_len: int) -> list[dict]:
    """Rows of at most seq_len tokens: [CLS] window [SEP]; `labels` at the first sub-token of each
    word the window owns (-100 elsewhere), `word_index` there too, `sentence` per row."""
    width = seq_len - 2
    all_words = [w for words, _ in sentences for w in words]
    pieces = tokenizer(all_words, add_special_tokens=False)["input_ids"]
    rows, cursor = [], 0
    for s, (words, labels) in enumerate(sentences):
        ids, first = [], []
        for p in pieces[cursor:cursor + len(words)]:
            first.append(len(ids))
            ids.extend(p or [tokenizer.unk_token_id])
        cursor += len(words)
        if len(ids) <= width:
            starts = [0]
        else:
            starts = list(range(0, len(ids) - width, max(width // 2, 1))) + [len(ids) - width]
        owner = [
            min(
                range(len(starts)), key=lambda k:
                (abs(f - (starts[k] + (width - 1) / 2))
                 if starts[k] <= f < starts[k] + width else math.inf, k)) for f in first
        ]
        for k, start in enumerate(starts):
            chunk = ids[start:start + width]
            row_labels = [-100] * (len(chunk) + 2)
            row_words = [-1] * (len(chunk) + 2)
            for w, (f, o) in enumerate(zip(first, owner)):
                if o == k:
                    row_labels[1 + f - start] = label_ids.get(labels[w], -100)
                    row_words[1 + f - start] = w
            rows.append({
                "input_ids": [tokenizer.cls_token_id, *chunk, tokenizer.sep_token_id],
                "labels": row_labels,
                "word_index": row_words,
                "sentence": s
            })
    return rows


def predict_words(model, rows, sentences, id2label: dict, batch_size: int = 64):
    """Each sentence's predicted labels, word by word (one eval pass, padded per batch)."""
    return predict_and_loss(model, rows, sentences, id2label, batch_size)[0]


def predict_and_loss(model, rows, sentences, id2label: dict, batch_size: int = 64):
    """`predict_words`, and the held-out loss from the same pass: cross-entropy summed over every
    labelled first sub-token (labels not in the training set are -100, as in flaxlm) over their
    count, the definition of flaxlm's `eval_loss`."""
    import torch
    predicted = [[None] * len(words) for words, _ in sentences]
    loss_sum, labelled = 0.0, 0
    model.eval()
    with torch.no_grad():
        for first in range(0, len(rows), batch_size):
            chunk = rows[first:first + batch_size]
            length = max(len(r["input_ids"]) for r in chunk)
            ids = torch.zeros(len(chunk), length, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(chunk):
                ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
                mask[i, :len(r["input_ids"])] = 1
            gold = torch.full_like(ids, -100)
            for i, r in enumerate(chunk):
                gold[i, :len(r["labels"])] = torch.tensor(r["labels"])
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss_sum += torch.nn.functional.cross_entropy(logits.flatten(0, 1), gold.flatten(),
                                                          ignore_index=-100,
                                                          reduction="sum").item()
            labelled += int((gold != -100).sum())
            best = logits.argmax(-1)
            for i, r in enumerate(chunk):
                for c, w in enumerate(r["word_index"]):
                    if w >= 0:
                        predicted[r["sentence"]][w] = id2label[int(best[i, c])]
    assert all(x is not None for s in predicted for x in s), "a word got no prediction"
    return predicted, loss_sum / max(labelled, 1)


def seqeval_scores(sentences, predicted) -> dict:
    from seqeval.metrics import f1_score, precision_score, recall_score
    gold = [labels for _, labels in sentences]
    return {
        "entity_precision": precision_score(gold, predicted),
        "entity_recall": recall_score(gold, predicted),
        "entity_f1": f1_score(gold, predicted)
    }


def pos_scores(sentences, predicted) -> dict:
    """Word accuracy and scikit-learn's macro P/R/F1 over every tag in gold or predictions."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    gold = [x for _, labels in sentences for x in labels]
    flat = [x for labels in predicted for x in labels]
    p, r, f, _ = precision_recall_fscore_support(gold, flat, average="macro", zero_division=0)
    return {
        "accuracy": accuracy_score(gold, flat),
        "macro_precision": p,
        "macro_recall": r,
        "macro_f1": f
    }


SCORERS = {"conll2002": seqeval_scores, "conllu": pos_scores}


def layerwise_groups(model, recipe) -> list[dict]:
    """flaxlm's definition: classifier × head_lr_scale, layer i of L × d^(L-i), embeddings ×
    d^(L+1); no weight decay on biases and LayerNorm weights."""
    layers = model.config.num_hidden_layers
    groups: dict = {}
    for name, p in model.named_parameters():
        if name.startswith("bert.encoder.layer."):
            depth = layers - int(name.split(".")[3])
        elif name.startswith("bert.embeddings."):
            depth = layers + 1
        else:
            assert name.startswith("classifier."), name
            depth = 0
        decay = 0.0 if name.endswith("bias") or "LayerNorm" in name else recipe.weight_decay
        key = (depth, decay)
        groups.setdefault(
            key, {
                "params": [],
                "weight_decay": decay,
                "lr": recipe.learning_rate *
                (recipe.layer_decay ** depth if depth else getattr(recipe, "head_lr_scale", 1.0))
            })
        groups[key]["params"].append(p)
    return list(groups.values())


# -- the loop --------------------------------------------------------------------------------------
def make_optimizer(model, recipe, total: int):
    """AdamW(0.9, 0.999) over `layerwise_groups` and its schedule: constant, or linear decay to 0
    over `total` steps after `recipe.warmup_proportion` of them."""
    import torch
    from transformers import get_constant_schedule, get_linear_schedule_with_warmup
    optimizer = torch.optim.AdamW(layerwise_groups(model, recipe), lr=recipe.learning_rate,
                                  betas=(0.9, 0.999), eps=recipe.eps)
    if getattr(recipe, "schedule", "linear") == "constant":
        assert not recipe.warmup_proportion, "a constant schedule here has no warmup"
        return optimizer, get_constant_schedule(optimizer)
    return optimizer, get_linear_schedule_with_warmup(optimizer,
                                                      round(recipe.warmup_proportion * total),
                                                      total)


def train_step(model, batch, optimizer, schedule, max_grad_norm: float) -> float:
    """One update: the model's own loss (mean over labelled tokens), global-norm clipping, AdamW,
    the schedule's next rate; returns the loss."""
    import torch
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def seeded_draws(init_hf: str, labels: list[str], recipe, dataset, collate_fn):
    """The loop's random draws from `recipe.seed`: the model with its fresh classifier
    (transformers' `normal(0, 0.02)`, from torch's global generator, which then drives dropout)
    and the shuffling DataLoader over `dataset` (its own generator). Only the dataset's length
    reaches the order, so a DataLoader over `range(n)` yields the row indices of `finetune`'s
    batches (`benchmarks.flare_chain converse`)."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import BertForTokenClassification
    torch.manual_seed(recipe.seed)
    model = BertForTokenClassification.from_pretrained(
        init_hf, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={
            x: i
            for i, x in enumerate(labels)
        }, hidden_dropout_prob=recipe.dropout, attention_probs_dropout_prob=recipe.dropout)
    loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True, collate_fn=collate_fn,
                        generator=torch.Generator().manual_seed(recipe.seed))
    return model, loader


def finetune(init_hf: str, train_file: str, test_file: str, recipe, threads: int, began: float,
             data_format: str = "conll2002") -> dict:
    """Fine-tunes `init_hf` on `train_file` with `recipe` (the script's `Recipe`; `schedule`
    linear or constant), scoring `test_file` after every epoch; returns the record of torch.json.
    `setup_s` counts from `began` (the caller's start, so choosing the training file counts as
    set-up)."""
    import torch
    from transformers import AutoTokenizer, DataCollatorForTokenClassification
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(init_hf)
    read, scorer = READERS[data_format], SCORERS[data_format]
    train = read(train_file)
    test = read(test_file)
    labels = sorted({x for _, ls in train for x in ls})
    label_ids = {x: i for i, x in enumerate(labels)}
    train_rows = [{
        "input_ids": r["input_ids"],
        "labels": r["labels"]
    } for r in encode(train, tokenizer, label_ids, recipe.seq_len)]
    test_rows = encode(test, tokenizer, label_ids, recipe.seq_len)
    model, loader = seeded_draws(init_hf, labels, recipe, train_rows,
                                 DataCollatorForTokenClassification(tokenizer))
    steps_per_epoch = math.ceil(len(train_rows) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    optimizer, schedule = make_optimizer(model, recipe, total)
    setup_s = time.perf_counter() - began
    epochs, step_times, eval_s = [], [], 0.0
    loop_began = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        losses = []
        for batch in loader:
            t = time.perf_counter()
            losses.append(train_step(model, batch, optimizer, schedule, recipe.max_grad_norm))
            step_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        predicted, test_loss = predict_and_loss(model, test_rows, test, dict(enumerate(labels)))
        scores = scorer(test, predicted)
        eval_s += time.perf_counter() - t
        epochs.append({
            "epoch": epoch,
            "train_loss": sum(losses) / len(losses),
            "test_loss": test_loss,
            **scores
        })
        print(
            f"torch: epoch {epoch}: loss {epochs[-1]['train_loss']:.4f}, test loss "
            f"{test_loss:.4f}, test " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
            flush=True)
    return {
        "epochs": epochs,
        "steps": total,
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
        "setup_s": setup_s,
        "loop_s": time.perf_counter() - loop_began,
        "eval_s": eval_s,
        # Training only, batching included (as flaxlm's log windows include it).
        "train_s": time.perf_counter() - loop_began - eval_s,
        "median_step_s": sorted(step_times)[len(step_times) // 2],
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__
    }


def score(model_dir: str, test_file: str, seq_len: int, threads: int) -> dict:
    """seqeval entity scores of an exported token classifier on `test_file`, with this side's own
    encoding and prediction."""
    import torch
    from transformers import AutoTokenizer, BertForTokenClassification
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForTokenClassification.from_pretrained(model_dir)
    test = read_conll(test_file)
    rows = encode(test, tokenizer, model.config.label2id, seq_len)
    return seqeval_scores(test, predict_words(model, rows, test, model.config.id2label))

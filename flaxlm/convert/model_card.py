"""README.md of a release bundle: what the model is, how it was trained, how well, how to use it."""

from __future__ import annotations

import json
import os

from flaxlm.convert.mappings.tables import TASKS
from flaxlm.models.config import ModelConfig
from flaxlm.run.workdir import Workdir

_SHOWN = ("loss", "accuracy", "eval_loss", "eval_accuracy")


def final_metrics(wd: Workdir, step: int) -> dict[str, tuple[int, float]]:
    """Last logged value (and its step) of each headline metric at or before `step`."""
    out: dict[str, tuple[int, float]] = {}
    for row in wd.read_metrics():
        if row.get("step", 0) > step:
            continue
        for key in _SHOWN:
            if isinstance(row.get(key), (int, float)):
                out[key] = (row["step"], float(row[key]))
    return out


def _training_data(run: dict) -> str:
    raw = run.get("config") or {}
    if raw.get("source") == "hf-import":
        return f"imported from the Hugging Face checkpoint `{raw.get('hf_dir', '?')}`"
    files = (raw.get("data") or {}).get("train_files")
    return f"`{files}`" if files else "not recorded"


# Per head: what the model is, the Hub tag, and a usage example for its transformers pipeline.
_KINDS = {
    "mlm": (
        "A masked language model", "masked-lm",
        'fill = pipeline("fill-mask", model="{model}")\nprint(fill("Roma è la {mask} d\'Italia."))'
    ),
    "token_classification": (
        "A token classifier", "token-classification",
        'tag = pipeline("token-classification", model="{model}", aggregation_strategy="simple")\n'
        'print(tag("Roma è la capitale d\'Italia."))'),
    "sequence_classification": ("A sequence classifier", "text-classification",
                                'classify = pipeline("text-classification", model="{model}")\n'
                                'print(classify("Roma è la capitale d\'Italia."))'),
}
# An ELECTRA discriminator: what users fine-tune (no pipeline runs its replaced-token head).
_KINDS["electra"] = (
    "An ELECTRA discriminator (replaced-token detection; the generator is in `generator/`)",
    "electra", 'from transformers import AutoModelForSequenceClassification\n'
    'model = AutoModelForSequenceClassification.from_pretrained("{model}", num_labels=2)'
    '  # then fine-tune')


def model_card(*, name: str, hf_class: str, config: ModelConfig, tokenizer, params: int,
               wd: Workdir, step: int, parity: dict, mask_token: str, task: str = "mlm") -> str:
    metrics = final_metrics(wd, step)
    rows = "\n".join(f"| {k} | {v:.4f} | {s} |" for k, (s, v) in metrics.items())
    metrics_block = (f"| metric | value | at step |\n|---|---|---|\n{rows}"
                     if rows else "No metrics were logged (metrics.jsonl is absent or empty).")
    tok_desc = ("SentencePiece, XLM-R id layout" if tokenizer.kind == "sentencepiece" else
                f"WordPiece, lowercase={tokenizer.lowercase}, "
                f"strip_accents={tokenizer.strip_accents}")
    unused = config.vocab_size - tokenizer.vocab_size
    unused_rows = (f"; {config.vocab_size:,} embedding rows, {unused:,} of them never produced by "
                   "the tokenizer" if unused else "")
    parity_line = ", ".join(f"{k} = {v:.2e}" for k, v in parity.items() if k.endswith("diff"))
    what, tag, usage = _KINDS[task]
    usage = usage.format(model=os.path.basename(name), mask=mask_token)
    pipeline_tag = TASKS[task].pipeline
    tied = " (MLM decoder tied to the word embeddings)" if task == "mlm" else ""
    labels = (f"\n| labels | {config.num_labels}: {', '.join(wd.labels or [])} |"
              if task not in ("mlm", "electra") else "")
    return f"""---
library_name: transformers
pipeline_tag: {pipeline_tag}
tags: [flaxlm, {config.arch}, {tag}]
---

# {name}

{what} trained with flaxlm (JAX/Flax) and exported to PyTorch `transformers` as
`{hf_class}`.

## Model

| | |
|---|---|
| architecture | `{hf_class}` (flaxlm arch `{config.arch}`) |
| layers × hidden × heads | {config.num_layers} × {config.hidden_size} × {config.num_heads} |
| intermediate size | {config.intermediate_size} |
| max sequence length | {config.max_seq_len} |
| parameters | {params:,}{tied} |
| vocabulary | {tokenizer.vocab_size:,} tokens ({tok_desc}){unused_rows} |{labels}

## Training

- training data: {_training_data(wd.run)}
- steps: {step}
- objective: {wd.objective}

{metrics_block}

## Conversion check

At export the PyTorch model was loaded from these files (fp32, eval mode) and compared with the
Flax model on a padded batch of real text ({parity.get("batch_shape")}): max |Δ| {parity_line}
(tolerance 1e-4).

## Usage

```python
from transformers import pipeline

{usage}
```
"""

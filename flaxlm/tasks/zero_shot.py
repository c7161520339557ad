"""Zero-shot classification with an NLI-fine-tuned model, run by flaxlm's own Flax model.

Each candidate label becomes a hypothesis (`template.format(label)`, e.g. "Este ejemplo es {}.")
paired with the text as premise; the model's `entailment` logit scores it. Single-label: a
softmax of the entailment logits over the candidates. Multi-label: per candidate, a softmax over
(contradiction, entailment) logits. Both as transformers' zero-shot-classification pipeline
defines them (the entailment label is the first whose name starts with "entail"; contradiction is
label 0, or the last label when entailment is 0), so the scores agree with the pipeline on the
exported model.

  flaxlm zero-shot --model exports/xnli_es --labels deportes,política \
      --template "Este ejemplo es {}." "El equipo ganó la final."
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Sequence

import jax
import numpy as np
from flax import nnx

from flaxlm import storage
from flaxlm.run.checkpoint import read_params
from flaxlm.convert.model_io import abstract_params
from flaxlm.data import pair_batches
from flaxlm.data.pairs import Example
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.run.workdir import Workdir, open_or_import

DEFAULT_TEMPLATE = "Este ejemplo es {}."
MAX_SEQ_LEN = 512


def entailment_index(labels: Sequence[str], where: str) -> int:
    for i, name in enumerate(labels):
        if name.lower().startswith("entail"):
            return i
    raise FlaxlmError(f"{where}: no entailment label among {', '.join(labels) or 'its labels'}; "
                      "zero-shot needs a model fine-tuned on NLI with labels such as "
                      "entailment,neutral,contradiction (configs/xnli_es.py)")


@contextlib.contextmanager
def as_workdir(model: str) -> Iterator[Workdir]:
    """`model` if it is a flaxlm workdir, else a temporary import of the HF directory (either
    may be on `gs://`)."""
    if not storage.isdir(model):
        raise FlaxlmError(f"{model}: not a directory (expected an HF model dir or a flaxlm "
                          "workdir)")
    from flaxlm.convert.commands import import_hf

    with tempfile.TemporaryDirectory(prefix="flaxlm-zero-shot-") as tmp:
        yield open_or_import(model, import_hf, os.path.join(tmp, "workdir"))


def zero_shot(model: str, texts: Sequence[str], labels: Sequence[str], *,
              template: str = DEFAULT_TEMPLATE, multi_label: bool = False) -> list[dict]:
    """Per text: {"sequence", "labels" (best first), "scores"} — the pipeline's output format."""
    labels = [label.strip() for label in labels if label.strip()]
    if not labels or not texts:
        raise FlaxlmError("zero-shot needs at least one text and one candidate label")
    if template.format(labels[0]) == template:
        raise FlaxlmError(f"--template {template!r} has no {{}} where the label goes")
    with as_workdir(model) as wd:
        wd.refuse_electra_pair("zero-shot needs a sequence classifier fine-tuned on NLI",
                               (f"fine-tune the discriminator on XNLI (configs/xnli_es.py with "
                                f"--config.init_from={model}) and pass that workdir"))
        if wd.head != "sequence_classification":
            raise FlaxlmError(f"{model}: a {wd.head} model; zero-shot needs a sequence "
                              "classifier fine-tuned on NLI")
        model_labels = wd.labels or []
        entail = entailment_index(model_labels, model)
        graphdef, abstract = abstract_params(wd.model, wd.head)
        params, _, _ = read_params(wd.path, abstract)
        tokenizer = load_tokenizer(wd.tokenizer_dir)
    pairs = [Example(text, template.format(label), "") for text in texts for label in labels]
    seq_len = min(wd.model.max_seq_len, MAX_SEQ_LEN)
    # The pipeline's truncation: the text is cut, never the hypothesis.
    rows = pair_batches.encode(tokenizer, pairs, seq_len, {}, truncation="only_first",
                               token_types=wd.model.type_vocab_size > 0).rows
    batch = {k: rows[k] for k in pair_batches.ROW_KEYS}
    logits = jax.jit(lambda p, b: nnx.merge(graphdef, p)(b))(params, batch)
    logits_TxNxC = np.asarray(logits, np.float64).reshape(len(texts), len(labels), -1)
    if multi_label or len(labels) == 1:
        contradiction = -1 if entail == 0 else 0
        pair_TxNx2 = logits_TxNxC[..., [contradiction, entail]]
        scores_TxN = _softmax(pair_TxNx2)[..., 1]
    else:
        scores_TxN = _softmax(logits_TxNxC[..., entail])
    results = []
    for text, scores_N in zip(texts, scores_TxN):
        order = np.argsort(-scores_N, kind="stable")
        results.append({
            "sequence": text,
            "labels": [labels[i] for i in order],
            "scores": scores_N[order].tolist()
        })
    return results


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def format_results(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines.append(r["sequence"])
        lines += [f"  {score:.4f}  {label}" for label, score in zip(r["labels"], r["scores"])]
    return "\n".join(lines)


def _cmd_zero_shot(args, _):
    print(
        format_results(
            zero_shot(args.model, args.text, args.labels.split(","), template=args.template,
                      multi_label=args.multi_label)))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "zero-shot", help="classify texts into any labels with an NLI model",
        description="Scores each candidate label as the hypothesis "
        "TEMPLATE.format(label) entailed by the text, with flaxlm's own model.")
    p.add_argument("--model", required=True, help="NLI-fine-tuned HF model dir or flaxlm workdir")
    p.add_argument("--labels", required=True, help="comma-separated candidate labels")
    p.add_argument("--template", default=DEFAULT_TEMPLATE, help="hypothesis with {} for the label")
    p.add_argument("--multi-label", action="store_true",
                   help="score each label on its own (entailment vs contradiction)")
    p.add_argument("text", nargs="+")
    p.set_defaults(func=_cmd_zero_shot)

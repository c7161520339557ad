"""What pruning changed: vocabulary and parameters, corpus coverage, and how held-out text
tokenizes before and after (unknown tokens, tokens per word)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from flaxlm.data import sources
from flaxlm.data.tokenizers import Tokenizer
from flaxlm.vocab.doc_freq import DocFreq
from flaxlm.vocab.selection import Plan

REPORT_FILE = "prune_report.json"
# {"sources": [[old ids] by new id]}: where each row of the pruned model came from.
SOURCES_FILE = "pruned_ids.json"


def heldout_paragraphs(specs: Sequence[str], text_field: str = "text") -> list[str]:
    return [p for doc in sources.iter_documents(specs, text_field) for p in doc]


def first_paragraphs(specs: Sequence[str], n: int, text_field: str = "text") -> list[str]:
    paragraphs = (p for doc in sources.iter_documents(specs, text_field) for p in doc)
    return list(itertools.islice(paragraphs, n))


def tokenization_stats(tok: Tokenizer, paragraphs: list[str]) -> dict:
    ids = [ids for ids, _ in tok.encode_batch(paragraphs)]
    tokens = sum(len(i) for i in ids)
    unknown = sum(int((i == tok.unk_id).sum()) for i in ids)
    words = sum(len(p.split()) for p in paragraphs)
    return {
        "tokens": tokens,
        "words": words,
        "unk": unknown,
        "unk_rate": unknown / max(tokens, 1),
        "tokens_per_word": tokens / max(words, 1)
    }


def param_stats(flat: dict, axes: dict[str, int]) -> dict:
    total = int(sum(np.size(v) for v in flat.values()))
    vocab = int(sum(np.size(flat[n]) for n in axes))
    return {"params": total, "vocab_params": vocab, "embedding_share": vocab / total}


def coverage(freq: DocFreq, plan: Plan) -> float:
    """The share of the corpus' tokens (as the original tokenizer cut it) whose token, or its
    uncased group, the pruned vocabulary keeps."""
    total = int(freq.tokens_V.sum())
    return int(freq.tokens_V[plan.kept_old_ids()].sum()) / max(total, 1)


def format_report(r: dict) -> str:
    b, a = r["before"], r["after"]
    lines = [
        f"vocabulary  {b['vocab']:>10,} → {a['vocab']:,} (kept: " +
        ", ".join(f"{k} {v:,}" for k, v in r["kept"].items()) +
        (f"; {r['merged_case_variants']:,} case variants merged" if r["uncase"] else "") +
        (f"; {b['unused_rows']:,} embedding rows no token reached dropped"
         if b.get("unused_rows") else "") + ")",
        f"parameters  {b['params']:>10,} → {a['params']:,} "
        f"(embedding share {b['embedding_share']:.1%} → {a['embedding_share']:.1%})",
        f"corpus      {r['corpus']['documents']:,} documents, "
        f"{r['corpus']['tokens']:,} tokens, {r['corpus']['coverage']:.2%} of them kept; "
        f"{r['corpus']['docs_per_second']:,.0f} docs/s",
    ]
    if "unk_rate" in b:
        lines.append(f"held-out    unk rate {b['unk_rate']:.4%} → {a['unk_rate']:.4%} "
                     f"({b['unk']:,} → {a['unk']:,} unknown tokens), tokens/word "
                     f"{b['tokens_per_word']:.3f} → {a['tokens_per_word']:.3f} "
                     f"({r['heldout_words']:,} words)")
    return "\n".join(lines)

"""`flaxlm prune-vocab`: a model (flaxlm workdir or Hugging Face directory) → a new workdir with
a smaller, optionally uncased vocabulary, ready for `--config.init_from=` and `flaxlm export`.

Everything is checked and counted before anything is written; the workdir is assembled next to
`--out` and renamed into place only once the new tokenizer gives the same ids in flaxlm and in
transformers. Nothing of the source is modified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from flaxlm import storage
from flaxlm.convert.export import staged_dir
from flaxlm.convert.model_io import abstract_params
from flaxlm.convert.tokenizer_files import (_hf_side_files, check_rows, compare, load_hf_tokenizer)
from flaxlm.data.tokenizer_json import write_tokenizer_json
from flaxlm.data.tokenizers import META_FILE, Tokenizer, load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.models.param_tree import flat_names, unflatten_like
from flaxlm.run.checkpoint import read_params, write_weights_only
from flaxlm.run.workdir import Workdir, open_or_import
from flaxlm.vocab import doc_freq, report, sentencepiece_prune, wordpiece_prune
from flaxlm.vocab.reindex import mixing_weights, reindex, vocab_axes
from flaxlm.vocab.selection import Plan, select
from flaxlm.vocab.vocabulary import Vocabulary

# Paragraphs of held-out (else corpus) text on which flaxlm and transformers must agree.
AGREEMENT_PARAGRAPHS = 200


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    min_doc_freq: float = 0.001
    uncase: bool = False
    keep_chars: bool = True  # single characters of the corpus (and byte pieces) are kept
    chars_from: tuple[str, ...] = ()  # more text whose characters are kept
    rows: str = "lowercase"  # "lowercase" | "average": rows of merged case variants
    text_field: str = "text"  # Parquet column / JSON lines field of the corpus files


def check_out(out: str) -> None:
    """A run directory is never overwritten; an empty directory may be filled."""
    wd = Workdir(out)
    if storage.exists(wd.config_file) or wd.has_checkpoints():
        raise FlaxlmError(f"{out} already holds a run; choose a new --out (nothing was written)")
    if storage.is_remote(out):
        taken = storage.exists(out)  # a bucket has no empty directories
    else:
        taken = os.path.lexists(out) and (not os.path.isdir(out) or bool(os.listdir(out)))
    if taken:
        raise FlaxlmError(f"{out} exists and is not an empty directory; choose a new --out")


def open_source(model: str, stack: contextlib.ExitStack, tokenizer_dir: str | None) -> Workdir:
    """The model as a workdir: itself, or a Hugging Face directory imported (with parity) into a
    temporary one."""
    from flaxlm.convert.commands import import_hf

    run = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "imported")
    return open_or_import(model,
                          lambda hf_dir, into: import_hf(hf_dir, into, tokenizer_dir=tokenizer_dir),
                          run)


def read_source_vocabulary(source: Workdir, model: str) -> tuple[Tokenizer, Vocabulary]:
    if not storage.isfile(os.path.join(source.tokenizer_dir, META_FILE)):
        raise FlaxlmError(f"{model}: has no tokenizer ({source.tokenizer_dir} holds no "
                          f"{META_FILE}); pruning needs the tokenizer the model was trained with")
    tok = load_tokenizer(source.tokenizer_dir)
    # Rows no token id reaches (a release's padding of its table) are not kept: `select` plans
    # over the tokenizer's ids only.
    check_rows(tok.vocab_size, source.model.vocab_size, model)
    # tok.path: the tokenizer's local directory (a local copy of a gs:// one).
    if tok.kind == "sentencepiece":
        return tok, sentencepiece_prune.read_vocabulary(tok.path, tok.vocab_size)
    return tok, wordpiece_prune.read_vocabulary(tok.path, tok)


def keep_chars(tok: Tokenizer, freq: doc_freq.DocFreq, options: PruneOptions) -> set[str] | None:
    if not options.keep_chars:
        return None
    chars = freq.chars + "".join(
        p for p in report.heldout_paragraphs(options.chars_from, options.text_field))
    chars = "".join(sorted(set(chars)))
    if tok.kind == "sentencepiece":
        return sentencepiece_prune.normalize_chars(tok.path, chars, options.uncase)
    return wordpiece_prune.normalize_chars(tok, chars, options.uncase)


def write_tokenizer(tok: Tokenizer, plan: Plan, out_dir: str, options: PruneOptions,
                    model_max_length: int) -> Tokenizer:
    os.makedirs(out_dir)
    new_of_old = {ids[0]: j for j, ids in enumerate(plan.sources)}
    names = {
        "cls": tok.cls_id,
        "pad": tok.pad_id,
        "sep": tok.sep_id,
        "unk": tok.unk_id,
        "mask": tok.mask_id
    }
    lowercase = tok.lowercase or options.uncase
    if tok.kind == "sentencepiece":
        sentencepiece_prune.write_model(tok.path, out_dir, plan.pieces, plan.sources,
                                        options.uncase)
    else:
        wordpiece_prune.write_vocab(out_dir, plan.pieces)
    meta = {
        "kind": tok.kind,
        "lowercase": lowercase,
        "strip_accents": tok.strip_accents,
        "vocab_size": plan.size,
        "special_ids": {
            name: new_of_old[i]
            for name, i in names.items()
        }
    }
    with open(os.path.join(out_dir, META_FILE), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
    _hf_side_files(out_dir, tok.kind, lowercase=lowercase, strip_accents=tok.strip_accents,
                   model_max_length=model_max_length)
    write_tokenizer_json(out_dir)
    return load_tokenizer(out_dir)


def check_agreement(new_tok: Tokenizer, paragraphs: list[str], where: str) -> None:
    """flaxlm and transformers give the new tokenizer's same ids, on sample and real text."""
    hf_tok = load_hf_tokenizer(new_tok.path)
    compare(new_tok, hf_tok, new_tok.vocab_size, where)
    ours = [ids.tolist() for ids, _ in new_tok.encode_batch(paragraphs)]
    theirs = hf_tok(paragraphs, add_special_tokens=False, verbose=False)["input_ids"]
    for text, a, b in zip(paragraphs, ours, theirs):
        if a != b:
            raise FlaxlmError(f"{where}: flaxlm and transformers tokenize {text[:60]!r} "
                              "differently; the pruned tokenizer would not round-trip")


def prune_vocab(model: str, out: str, *, corpus: Sequence[str] = (), counts: Sequence[str] = (),
                heldout: Sequence[str] = (), options: PruneOptions = PruneOptions(),
                tokenizer_dir: str | None = None) -> dict:
    """Prunes `model`'s vocabulary to the tokens of `corpus` (or of merged `counts` files) into a
    new workdir `out`; returns the report (also saved as `out/prune_report.json`)."""
    if not 0 < options.min_doc_freq < 1:
        raise FlaxlmError(f"--min-doc-freq {options.min_doc_freq}: a fraction of documents, "
                          "strictly between 0 and 1 (0.001 keeps tokens in 0.1% of them)")
    if bool(corpus) == bool(counts):
        raise FlaxlmError("give either --corpus FILES or --counts FILES (from flaxlm doc-freq)")
    check_out(out)
    # A gs:// `out` is assembled and checked locally, then uploaded.
    with storage.local_output(out) as local_out, contextlib.ExitStack() as stack:
        out = os.path.abspath(local_out)
        source = open_source(model, stack, tokenizer_dir)
        # Checked before the corpus is counted: the pair's two towers share one embedding table.
        source.refuse_electra_pair(
            "prune-vocab prunes one model",
            (f"fine-tune the discriminator (init_from={model}) and prune that workdir, or prune "
             "the generator that `flaxlm export` writes to OUT/generator"))
        tok, vocab = read_source_vocabulary(source, model)
        if counts:
            freq = doc_freq.merge([doc_freq.load(p) for p in counts], counts, vocab)
        else:
            freq = doc_freq.count(corpus, tok, vocab, text_field=options.text_field)
        if freq.num_docs == 0:
            raise FlaxlmError(f"{', '.join(corpus or counts)}: no documents to count")
        plan = select(vocab, freq, min_doc_freq=options.min_doc_freq, uncase=options.uncase,
                      keep_chars=keep_chars(tok, freq, options))
        params, _, step = read_params(source.path, abstract_params(source.model, source.head)[1])
        flat = {k: np.asarray(v) for k, v in flat_names(params).items()}
        axes = vocab_axes(source.model, source.head)
        new_flat = reindex(flat, axes, plan, mixing_weights(plan, freq.tokens_V, options.rows))
        new_model = dataclasses.replace(source.model, vocab_size=plan.size)
        new_params = unflatten_like(abstract_params(new_model, source.head)[1], new_flat)
        paragraphs = report.heldout_paragraphs(heldout, options.text_field) if heldout else []
        sample = paragraphs[:AGREEMENT_PARAGRAPHS] or report.first_paragraphs(
            corpus, AGREEMENT_PARAGRAPHS, options.text_field)
        with staged_dir(out, overwrite=os.path.isdir(out)) as tmp:
            new_tok = write_tokenizer(tok, plan,
                                      Workdir(tmp).own_tokenizer_dir, options,
                                      new_model.max_seq_len)
            check_agreement(new_tok, sample, f"pruned tokenizer of {out}")
            result = _report(freq, plan, flat, new_flat, axes, tok, new_tok, paragraphs, options)
            result.update(model=storage.recorded_name(model), step=step,
                          out=storage.recorded_name(out))
            settings = {
                "source": "prune-vocab",
                "from": storage.recorded_name(model),
                "from_step": step,
                "corpus": list(corpus),
                "counts": list(counts),
                **dataclasses.asdict(options)
            }
            run = {
                "model": dataclasses.asdict(new_model),
                "head": source.head,
                "objective": source.objective
            }
            if source.labels is not None:
                run["labels"] = source.labels
            with open(os.path.join(tmp, report.REPORT_FILE), "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
            with open(os.path.join(tmp, report.SOURCES_FILE), "w", encoding="utf-8") as f:
                json.dump({"sources": [list(map(int, ids)) for ids in plan.sources]}, f)
            write_weights_only(tmp, new_params, run, settings)
    return result


def _report(freq, plan, flat, new_flat, axes, tok, new_tok, paragraphs, options) -> dict:
    # Embedding rows no token id reached (a release's padding of its table): dropped too.
    unused_rows = next(np.shape(flat[n])[a] for n, a in axes.items()) - tok.vocab_size
    before = {"vocab": tok.vocab_size, "unused_rows": unused_rows, **report.param_stats(flat, axes)}
    after = {"vocab": plan.size, **report.param_stats(new_flat, axes)}
    words = 0
    if paragraphs:
        stats = report.tokenization_stats(tok, paragraphs)
        new_stats = report.tokenization_stats(new_tok, paragraphs)
        words = stats["words"]
        before.update({k: stats[k] for k in ("unk", "unk_rate", "tokens_per_word")})
        after.update({k: new_stats[k] for k in ("unk", "unk_rate", "tokens_per_word")})
    return {
        "uncase": options.uncase,
        "min_doc_freq": options.min_doc_freq,
        "before": before,
        "after": after,
        "kept": plan.kept,
        "merged_case_variants": sum(len(s) - 1 for s in plan.sources),
        "heldout_words": words,
        "corpus": {
            "documents": freq.num_docs,
            "tokens": int(freq.tokens_V.sum()),
            "coverage": report.coverage(freq, plan),
            "docs_per_second": freq.docs_per_second
        }
    }

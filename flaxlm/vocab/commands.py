"""`flaxlm prune-vocab` and `flaxlm doc-freq` (vocabulary pruning, docs/vocab_pruning.md)."""

from __future__ import annotations


def _shard(text: str) -> tuple[int, int]:
    from flaxlm.errors import FlaxlmError

    try:
        index, count = (int(s) for s in text.split("/"))
    except ValueError:
        raise FlaxlmError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    return index, count


def _cmd_doc_freq(args, _):
    import contextlib
    import os

    from flaxlm.errors import FlaxlmError
    from flaxlm.vocab import doc_freq
    from flaxlm.vocab.prune import open_source, read_source_vocabulary

    from flaxlm import storage
    if os.path.lexists(args.out) or storage.exists(args.out):
        raise FlaxlmError(f"{args.out} already exists; choose a new --out")
    with contextlib.ExitStack() as stack:
        source = open_source(args.model, stack, args.tokenizer)
        tok, vocab = read_source_vocabulary(source, args.model)
        freq = doc_freq.count(args.corpus, tok, vocab, _shard(args.shard),
                              text_field=args.text_field)
    freq.save(args.out)
    print(f"flaxlm: counted {freq.num_docs:,} documents ({freq.docs_per_second:,.0f} docs/s) "
          f"into {args.out}")


def _cmd_prune_vocab(args, _):
    from flaxlm.vocab.prune import PruneOptions, prune_vocab
    from flaxlm.vocab.report import format_report

    options = PruneOptions(min_doc_freq=args.min_doc_freq, uncase=args.uncase,
                           keep_chars=not args.no_keep_chars, chars_from=tuple(args.keep_chars),
                           rows=args.rows, text_field=args.text_field)
    r = prune_vocab(args.model, args.out, corpus=args.corpus, counts=args.counts,
                    heldout=args.heldout, options=options, tokenizer_dir=args.tokenizer)
    print(format_report(r))
    print(f"flaxlm: wrote the pruned model to {r['out']} (report: prune_report.json)")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "prune-vocab", help="keep only the tokens a corpus uses (optionally uncased) in a new "
        "workdir", description="Counts the documents of --corpus holding each token, keeps those "
        "in at least --min-doc-freq of them plus the special tokens and the corpus' single "
        "characters, and writes a workdir with the smaller tokenizer and re-indexed embeddings "
        "and MLM bias, for --config.init_from and flaxlm export.")
    p.add_argument("--model", required=True, help="flaxlm workdir or Hugging Face model dir")
    p.add_argument(
        "--corpus", nargs="+", default=[], metavar="FILES",
        help="corpus files (Parquet, JSON lines, or text: one paragraph per line, "
        "blank line between documents) or tfds:NAME")
    p.add_argument(
        "--text-field", default="text",
        help="the Parquet column / JSON lines field holding a document (for "
        "--corpus, --keep-chars and --heldout)")
    p.add_argument("--counts", nargs="+", default=[], metavar="NPZ",
                   help="instead of --corpus: document counts from flaxlm doc-freq (shards add up)")
    p.add_argument("--min-doc-freq", type=float, default=0.001,
                   help="keep tokens in at least this fraction of documents (default 0.001)")
    p.add_argument("--uncase", action="store_true",
                   help="lowercase the tokenizer's input and merge each piece's case variants")
    p.add_argument(
        "--rows", choices=("lowercase", "average"), default="lowercase",
        help="with --uncase, a merged token's embedding and bias: the lowercase "
        "piece's (else the variants' frequency-weighted average), or always that "
        "average")
    p.add_argument(
        "--no-keep-chars", action="store_true",
        help="do not keep single-character (and byte-fallback) pieces below the "
        "threshold; text may then tokenize to <unk>")
    p.add_argument("--keep-chars", nargs="+", default=[], metavar="TEXT",
                   help="text files whose characters are kept too (e.g. the language's alphabet)")
    p.add_argument("--heldout", nargs="+", default=[], metavar="FILES",
                   help="text to report unknown-token rate and tokens per word on, before/after")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="for an HF --model that ships no tokenizer: the tokenizer's HF dir")
    p.add_argument("--out", required=True, help="new workdir to create")
    p.set_defaults(func=_cmd_prune_vocab)

    p = sub.add_parser(
        "doc-freq", help="count token document frequencies for prune-vocab --counts "
        "(one shard of the corpus per host)")
    p.add_argument("--model", required=True, help="flaxlm workdir or Hugging Face model dir")
    p.add_argument("--corpus", nargs="+", required=True, metavar="FILES")
    p.add_argument(
        "--shard", default="0/1",
        help="I/N: count the I-th of every N files / Parquet row groups (or, with "
        "fewer than N of those, every N-th document from the I-th)")
    p.add_argument("--text-field", default="text",
                   help="the Parquet column / JSON lines field holding a document")
    p.add_argument("--tokenizer", default=None, metavar="DIR")
    p.add_argument("--out", required=True, help=".npz file to write")
    p.set_defaults(func=_cmd_doc_freq)

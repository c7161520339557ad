"""`flaxlm export`, `flaxlm import` and `flaxlm fill-mask` (Hugging Face interop)."""

from __future__ import annotations


def _fmt_parity(result: dict) -> str:
    return " ".join(f"{k.replace('_max_abs_diff', '')}_max|Δ|={v:.2e}" for k, v in result.items()
                    if k.endswith("diff"))


def _cmd_export(args, _):
    from flaxlm.convert.export import export
    r = export(args.workdir, args.out, step=args.step, overwrite=args.overwrite)
    print(f"flaxlm: exported step {r['step']} as {r['hf_class']} ({r['params']:,} parameters) "
          f"to {r['out']}; parity vs transformers: {_fmt_parity(r)}")


def _cmd_import(args, _):
    from flaxlm.convert.import_hf import import_hf
    r = import_hf(args.hf, args.out, overwrite=args.overwrite, tokenizer_dir=args.tokenizer,
                  generator_dir=args.generator)
    fresh = "; MLM head initialized fresh" if r["initialized_fresh"] else ""
    unused = (f"; {r['unused_rows']} embedding rows the tokenizer never produces kept"
              if r["unused_rows"] else "")
    print(f"flaxlm: imported {args.hf} ({r['arch']}, {r['params']:,} parameters) into {r['out']}"
          f"{fresh}{unused}; parity vs transformers: {_fmt_parity(r)}")


def _cmd_fill_mask(args, _):
    from flaxlm.convert.fill_mask import fill_mask, format_predictions
    results = fill_mask(args.model, args.text, top_k=args.top_k, step=args.step)
    print(format_predictions(args.text, results))


def add_parsers(sub) -> None:
    """Registers the conversion subcommands on the `flaxlm` parser."""
    p = sub.add_parser("export", help="write a Hugging Face release bundle from a workdir",
                       description="Converts a checkpoint to a transformers model directory "
                       "(config, safetensors, tokenizer, README) and fails unless PyTorch "
                       "transformers reproduces the Flax logits within 1e-4.")
    p.add_argument("--workdir", required=True, help="flaxlm run directory")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument("--step", type=int, default=None,
                   help="checkpoint step (default: the best step in best.json if the run "
                   "selected one, else the latest)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("import", help="turn a Hugging Face checkpoint dir into a flaxlm workdir",
                       description="Reads an XLM-R, BERT, DistilBERT or ELECTRA checkpoint "
                       "(safetensors preferred; pytorch_model.bin only as weights) into a workdir "
                       "that --config.init_from and `flaxlm export` accept.")
    p.add_argument("--hf", required=True, help="Hugging Face model directory (local)")
    p.add_argument("--out", required=True, help="workdir to create")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="take the tokenizer from this HF directory instead of --hf (for "
                   "checkpoints that ship none, e.g. mMiniLMv2 with XLM-R's)")
    p.add_argument("--generator", default=None, metavar="DIR",
                   help="for an ElectraForPreTraining --hf: its ElectraForMaskedLM generator "
                   "(default: HF/generator, the layout `flaxlm export` writes), imported with it "
                   "for continued pre-training; without one the discriminator imports alone, "
                   "for fine-tuning")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("fill-mask", help="top-k predictions for <mask> in a text")
    p.add_argument("--model", required=True, help="HF model dir or flaxlm workdir")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--step", type=int, default=None, help="workdir checkpoint step")
    p.add_argument("text", nargs="+", help='e.g. "Roma è la <mask> d\'Italia."')
    p.set_defaults(func=_cmd_fill_mask)

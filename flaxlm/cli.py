"""`flaxlm` command line: parses, then calls one library function per command.

User errors (`FlaxlmError`) print one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

from flaxlm import jax_platform
from flaxlm.errors import CheckpointWriteError, FlaxlmError

# TensorFlow only runs the input pipeline here; its C++ start-up chatter is not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _cmd_train(args, overrides):
    if args.distributed:
        from flaxlm.distributed import initialize
        initialize()  # auto-detected: Cloud TPU VM slices, SLURM, Open MPI
    from flaxlm import run_config
    from flaxlm.train import train
    config = run_config.load(args.config, overrides)
    from flaxlm.tasks.repeats import check_single_run
    check_single_run(config)
    from flaxlm.run.run_log import library_logs_to_file
    with library_logs_to_file(args.workdir):  # orbax's background tracebacks: the log file only
        result = train(config, args.workdir, progress=not args.no_progress)
    if "step" in result:
        keys = result.get("summary_keys", ("loss", ))
        shown = {k: result[k] for k in ("step", *keys, *(f"eval_{k}" for k in keys)) if k in result}
        print("flaxlm: done " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in shown.items()))


def _cmd_tokenizer(args, _):
    from flaxlm.data.tokenizers import train_tokenizer
    tok = train_tokenizer(args.corpus, vocab_size=args.vocab_size, kind=args.type, out_dir=args.out,
                          lowercase=args.lowercase, strip_accents=args.strip_accents,
                          text_field=args.text_field)
    print(f"flaxlm: wrote a {tok.kind} tokenizer with {tok.vocab_size} entries to {args.out}")


def _cmd_prepare(args, _):
    from flaxlm.data.prepare import prepare_shards
    from flaxlm.data.tokenizers import load_tokenizer
    summary = prepare_shards(args.input, load_tokenizer(args.tokenizer), args.out,
                             seq_len=args.seq_len, num_shards=args.num_shards,
                             text_field=args.text_field)
    print(f"flaxlm: prepared {sum(summary['num_examples'])} examples of {args.seq_len} tokens "
          f"in {len(summary['num_examples'])} shards under {args.out}")


def _cmd_compile(args, overrides):
    import jax
    if not os.environ.get("JAX_PLATFORMS"):
        jax.config.update("jax_platforms", "cpu")  # compile-only TPU devices; no chip is used
    from flaxlm import aot, run_config
    from flaxlm.sharding import MeshConfig
    config = run_config.load(args.config, overrides)
    mesh = None
    if args.mesh:
        try:
            data, fsdp, tensor = (int(s) for s in args.mesh.split(","))
            mesh = MeshConfig(data=data, fsdp=fsdp, tensor=tensor)
        except ValueError:
            raise FlaxlmError(f"--mesh {args.mesh!r}: expected DATA,FSDP,TENSOR sizes, "
                              "e.g. 1,8,1 (-1: the remaining chips)") from None
    if not args.fit:
        print(aot.format_report(aot.compile_train_step(config, args.topology, mesh)), flush=True)
        return
    best, tried = aot.fit_micro_batch(config, args.topology, mesh,
                                      log=lambda line: print(line, flush=True))
    if best is None:
        print(aot.format_report(tried[-1]))
        raise FlaxlmError(f"--fit: not even a micro-batch of 1 per chip fits {args.topology} "
                          "with any remat policy; add fsdp (--mesh 1,N,1) or a larger slice")
    micro = best.batch_size // (best.grad_accum_steps * math.prod(best.mesh.values()) //
                                best.mesh.get("tensor", 1))
    print(f"fitted: micro-batch {micro} per chip with model.remat={best.remat}: "
          f"--config.train.grad_accum_steps={best.grad_accum_steps} for the global batch "
          f"{best.batch_size} (the fastest fitting compile, below)")
    print(aot.format_report(best), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flaxlm", description="Train compact encoder language models with JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="pre-train (or resume) from a config file",
                       epilog="Any --config.section.key=value overrides the config file.")
    p.add_argument("--config", required=True, help="configs/<name>.py (Python: trusted code)")
    p.add_argument("--workdir", required=True, help="checkpoints, metrics and logs go here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--distributed", action="store_true",
        help="join a multi-host job first (jax.distributed, auto-detected on Cloud "
        "TPU VMs); elsewhere use launch/multihost.py (docs/scaling.md)")
    p.set_defaults(func=_cmd_train, accepts_overrides=True)

    p = sub.add_parser(
        "compile", help="compile the train step for a TPU topology (no TPU needed) "
        "and report per-chip memory, XLA's step-time estimate and MFU",
        epilog="Needs pip install 'flaxlm[tpu]'. Any --config.section.key=value "
        "overrides the config file.")
    p.add_argument("--config", required=True, help="configs/<name>.py")
    p.add_argument("--topology", required=True, help="e.g. v5e-16, v4-8, v5p-8, v6e-8, v5e:4x4")
    p.add_argument("--mesh", default="", help="DATA,FSDP,TENSOR (default: the config's mesh)")
    p.add_argument(
        "--fit", action="store_true",
        help="search the largest per-chip micro-batch that fits the chip's HBM "
        "(model.remat none, then full if needed; only the config's model.remat if it "
        "sets one) and print the grad_accum_steps it implies; a compile per size tried")
    p.set_defaults(func=_cmd_compile, accepts_overrides=True)

    p = sub.add_parser("tokenizer", help="train a SentencePiece or WordPiece tokenizer")
    p.add_argument("--corpus", nargs="+", required=True,
                   help="corpus files, globs or directories: Parquet, JSON lines, text")
    p.add_argument("--text-field", default="text",
                   help="the Parquet column / JSON lines field holding a document")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--type", choices=("unigram", "wordpiece"), default="unigram")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--lowercase", action="store_true")
    p.add_argument("--strip-accents", action="store_true")
    p.set_defaults(func=_cmd_tokenizer)

    p = sub.add_parser("prepare", help="tokenize a large corpus offline into TFRecord shards")
    p.add_argument("--input", nargs="+", required=True,
                   help="corpus files, globs or directories: Parquet, JSON lines, text")
    p.add_argument("--text-field", default="text",
                   help="the Parquet column / JSON lines field holding a document")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory")
    p.add_argument("--out", required=True)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--num-shards", type=int, default=8)
    p.set_defaults(func=_cmd_prepare)

    from flaxlm.convert import commands as convert_commands
    convert_commands.add_parsers(sub)
    from flaxlm.tasks import zero_shot
    zero_shot.add_parser(sub)
    from flaxlm.tasks import commands as task_commands
    task_commands.add_parsers(sub)
    from flaxlm.vocab import commands as vocab_commands
    vocab_commands.add_parsers(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # Data warnings (bad bytes, skipped lines) are for users: one line, no source location.
    print(f"flaxlm: warning: {message}", file=file or sys.stderr)


# Set when the process should end without waiting for library threads (see CheckpointWriteError).
_exit_at_once = False


def main(argv: list[str] | None = None) -> int:
    global _exit_at_once
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if a.startswith("--config.")]
    unknown = [a for a in extra if not a.startswith("--config.")]
    if unknown or (overrides and not getattr(args, "accepts_overrides", False)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    try:
        args.func(args, overrides)
    except FlaxlmError as e:
        print(f"flaxlm: error: {e}", file=sys.stderr)
        _exit_at_once = isinstance(e, CheckpointWriteError)
        return 2
    except KeyboardInterrupt:
        print("flaxlm: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    """Console entry point."""
    warnings.showwarning = _show_warning
    code = main()
    if _exit_at_once:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()

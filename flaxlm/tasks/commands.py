"""`flaxlm finetune` and `flaxlm evaluate` (the parsers; the work is in repeats.py, tables.py)."""

from __future__ import annotations

import json


def _cmd_finetune(args, overrides):
    if args.distributed:
        from flaxlm.distributed import initialize
        initialize()
    from flaxlm.tasks.repeats import finetune
    results = finetune(args.config, overrides, args.workdir, progress=not args.no_progress)
    if results is not None:
        print(f"flaxlm: results in {args.workdir}/results.json; tables: "
              f"flaxlm evaluate --workdir {args.workdir}")


def _cmd_evaluate(args, _):
    from flaxlm.tasks import tables
    built = tables.build(args.workdir)
    print(tables.markdown(built))
    if args.json:
        from flaxlm import storage
        storage.write_text(args.json, json.dumps(built, indent=2))
        print(f"flaxlm: wrote {args.json}")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune from a config file: one run, or k folds / several seeds, "
        "then results.json", epilog="Any --config.section.key=value overrides the config file; "
        "--config.init_from may name a flaxlm workdir or a Hugging Face model directory.")
    p.add_argument("--config", required=True, help="configs/<task>.py (Python: trusted code)")
    p.add_argument("--workdir", required=True, help="the run, or one subdirectory per run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="join a multi-host job first (as `flaxlm train --distributed`)")
    p.set_defaults(func=_cmd_finetune, accepts_overrides=True)

    p = sub.add_parser(
        "evaluate", help="print the model cards' tables from fine-tuning "
        "workdirs' results.json (Markdown)")
    p.add_argument("--workdir", nargs="+", required=True, help="workdirs of `flaxlm finetune`")
    p.add_argument("--json", default="", help="also write the tables as JSON to this file")
    p.set_defaults(func=_cmd_evaluate)

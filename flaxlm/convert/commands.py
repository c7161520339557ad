"""`flaxlm export`, `flaxlm import` and `flaxlm fill-mask` (Hugging Face interop).

`export` and `import_hf` are the library entry points: they pick the single-model conversion
(`export.py`, `import_hf.py`) or the ELECTRA pair's (`electra_bundle.py`), so neither of those
knows about the other, and handle `gs://` paths for both.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Sequence

from flaxlm import storage
from flaxlm.convert.electra import GENERATOR_SUBDIR
from flaxlm.convert.electra_bundle import export_pair, import_pair
from flaxlm.convert.export import check_out, export_model
from flaxlm.convert.fill_mask import fill_mask_demo, format_predictions, masked_lm_dir
from flaxlm.convert.import_hf import import_model
from flaxlm.convert.parity import TOLERANCE
from flaxlm.convert.safe_load import check_hf_dir
from flaxlm.errors import FlaxlmError
from flaxlm.run.workdir import ELECTRA_PAIR, Workdir, is_workdir


def export(workdir: str, out: str, *, step: int | None = None, overwrite: bool = False,
           tolerance: float = TOLERANCE) -> dict:
    """Writes the release bundle for `workdir`'s checkpoint to `out`: `step`, else the best step
    when the run selected one (`best.json`, e.g. the best fine-tuning epoch), else the latest.
    An ELECTRA pre-training pair becomes two transformers models (`OUT/`, `OUT/generator/`).
    A `gs://` `out` is written locally, checked, then uploaded."""
    if storage.is_remote(out):
        if storage.exists(out) and not overwrite:
            raise FlaxlmError(f"{out} already exists; choose another output or pass --overwrite")
        with tempfile.TemporaryDirectory(prefix="flaxlm-export-") as local:
            result = export(workdir, os.path.join(local, os.path.basename(out.rstrip("/"))),
                            step=step, tolerance=tolerance)
            storage.copy_tree(result["out"], out)
        return {**result, "out": out}
    check_out(out, overwrite)
    if Workdir.open(
            workdir
    ).kind == ELECTRA_PAIR:  # a generator + discriminator pair: two transformers models
        return export_pair(workdir, out, step=step, overwrite=overwrite, tolerance=tolerance)
    return export_model(workdir, out, step=step, overwrite=overwrite, tolerance=tolerance)


def import_hf(hf_dir: str, out: str, *, overwrite: bool = False, tolerance: float = TOLERANCE,
              tokenizer_dir: str | None = None, generator_dir: str | None = None) -> dict:
    """Converts `hf_dir` into a flaxlm workdir at `out`; returns a summary. An
    `ElectraForPreTraining` with its generator (`generator_dir`, else `hf_dir/generator`) is
    imported as a pre-training pair, without one as an encoder for fine-tuning.
    `gs://` sources are read from local copies; a `gs://` `out` is written and checked locally,
    then uploaded."""
    if storage.is_remote(out):
        if storage.exists(out) and not overwrite:
            raise FlaxlmError(f"{out} already exists; choose another output or pass --overwrite")
        with tempfile.TemporaryDirectory(prefix="flaxlm-import-") as local:
            result = import_hf(hf_dir, os.path.join(local, "workdir"), tolerance=tolerance,
                               tokenizer_dir=tokenizer_dir, generator_dir=generator_dir)
            storage.copy_tree(result["out"], out)
        return {**result, "out": out}
    sources = [p for p in (hf_dir, tokenizer_dir, generator_dir) if p]
    if any(storage.is_remote(p) for p in sources):  # transformers and safetensors read local files
        local = {p: storage.local_copy(p) for p in sources}
        return import_hf(local[hf_dir], out, overwrite=overwrite, tolerance=tolerance,
                         tokenizer_dir=tokenizer_dir and local[tokenizer_dir],
                         generator_dir=generator_dir and local[generator_dir])
    check_out(out, overwrite)
    hf_class = (check_hf_dir(hf_dir).get("architectures") or [None])[0]
    has_generator = bool(generator_dir) or os.path.isdir(os.path.join(hf_dir, GENERATOR_SUBDIR))
    if hf_class == "ElectraForPreTraining" and has_generator:
        return import_pair(hf_dir, out, overwrite=overwrite, tolerance=tolerance,
                           tokenizer_dir=tokenizer_dir, generator_dir=generator_dir)
    return import_model(hf_dir, out, overwrite=overwrite, tolerance=tolerance,
                        tokenizer_dir=tokenizer_dir)


@contextlib.contextmanager
def as_hf_dir(model: str, step: int | None = None) -> Iterator[str]:
    """`model` itself (a local copy if remote) if it is an HF dir, else a temporary export of
    the flaxlm workdir."""
    if not is_workdir(model):
        yield storage.local_copy(model)
        return
    with tempfile.TemporaryDirectory(prefix="flaxlm-fill-mask-") as tmp:
        export(model, os.path.join(tmp, "bundle"), step=step)
        yield os.path.join(tmp, "bundle")


def fill_mask(model: str, sentences: Sequence[str], *, top_k: int = 5,
              step: int | None = None) -> list:
    """A workdir's export (an ELECTRA run's generator) or an HF dir, through `fill_mask_demo`."""
    if not storage.isdir(model):
        raise FlaxlmError(
            f"{model}: not a directory (expected an HF model dir or a flaxlm workdir)")
    with as_hf_dir(model, step) as hf_dir:
        return fill_mask_demo(masked_lm_dir(hf_dir), sentences, top_k=top_k)


def _fmt_parity(result: dict) -> str:
    return " ".join(f"{k.replace('_max_abs_diff', '')}_max|Δ|={v:.2e}" for k, v in result.items()
                    if k.endswith("diff"))


def _cmd_export(args, _):
    r = export(args.workdir, args.out, step=args.step, overwrite=args.overwrite)
    print(f"flaxlm: exported step {r['step']} as {r['hf_class']} ({r['params']:,} parameters) "
          f"to {r['out']}; parity vs transformers: {_fmt_parity(r)}")


def _cmd_import(args, _):
    r = import_hf(args.hf, args.out, overwrite=args.overwrite, tokenizer_dir=args.tokenizer,
                  generator_dir=args.generator)
    fresh = "; MLM head initialized fresh" if r["initialized_fresh"] else ""
    unused = (f"; {r['unused_rows']} embedding rows the tokenizer never produces kept"
              if r["unused_rows"] else "")
    print(f"flaxlm: imported {args.hf} ({r['arch']}, {r['params']:,} parameters) into {r['out']}"
          f"{fresh}{unused}; parity vs transformers: {_fmt_parity(r)}")


def _cmd_fill_mask(args, _):
    results = fill_mask(args.model, args.text, top_k=args.top_k, step=args.step)
    print(format_predictions(args.text, results))


def add_parsers(sub) -> None:
    """Registers the conversion subcommands on the `flaxlm` parser."""
    p = sub.add_parser(
        "export", help="write a Hugging Face release bundle from a workdir",
        description="Converts a checkpoint to a transformers model directory "
        "(config, safetensors, tokenizer, README) and fails unless PyTorch "
        "transformers reproduces the Flax logits within 1e-4.")
    p.add_argument("--workdir", required=True, help="flaxlm run directory")
    p.add_argument("--out", required=True, help="bundle directory to create")
    p.add_argument(
        "--step", type=int, default=None,
        help="checkpoint step (default: the best step in best.json if the run "
        "selected one, else the latest)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "import", help="turn a Hugging Face checkpoint dir into a flaxlm workdir",
        description="Reads an XLM-R, BERT, DistilBERT or ELECTRA checkpoint "
        "(safetensors preferred; pytorch_model.bin only as weights) into a workdir "
        "that --config.init_from and `flaxlm export` accept.")
    p.add_argument("--hf", required=True, help="Hugging Face model directory (local)")
    p.add_argument("--out", required=True, help="workdir to create")
    p.add_argument(
        "--tokenizer", default=None, metavar="DIR",
        help="take the tokenizer from this HF directory instead of --hf (for "
        "checkpoints that ship none, e.g. mMiniLMv2 with XLM-R's)")
    p.add_argument(
        "--generator", default=None, metavar="DIR",
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

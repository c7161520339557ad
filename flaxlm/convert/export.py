"""`flaxlm export`: a workdir checkpoint → a Hugging Face release bundle, proven by parity.

The bundle is assembled in a temporary directory next to `--out` and renamed into place only after
transformers has loaded it and matched the Flax model; a failed export leaves nothing at `--out`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

import numpy as np
from safetensors.numpy import load_file, save_file

from flaxlm.convert.hf_config import hf_config
from flaxlm.convert.mappings.tables import TASKS, Table, table_for
from flaxlm.convert.mappings.tensors import to_hf
from flaxlm.convert.model_card import model_card
from flaxlm.convert.model_io import abstract_params, build_model, param_count
from flaxlm.convert.parity import TOLERANCE, check_parity, parity_batch
from flaxlm.convert.tokenizer_files import check_rows, compare, write_release_tokenizer
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.models.param_tree import flat_names
from flaxlm.run.checkpoint import read_params
from flaxlm.run.workdir import Workdir

PARITY_MAX_LEN = 64


def check_out(out: str, overwrite: bool) -> None:
    """Fail before any work if `out` cannot be (re)placed."""
    out = os.path.abspath(out)
    if os.path.lexists(out) and not overwrite:
        raise FlaxlmError(f"{out} already exists; choose another output or pass --overwrite")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise FlaxlmError(f"{out} exists and is not a directory")


@contextlib.contextmanager
def staged_dir(out: str, *, overwrite: bool) -> Iterator[str]:
    """Yields a temp dir next to `out`; renames it to `out` if the block succeeds, else removes it."""
    check_out(out, overwrite)
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".partial", dir=parent)
    try:
        yield tmp
        if os.path.lexists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".old", dir=parent)
            os.rename(out, os.path.join(old, "previous"))
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    save_file(tensors, path, metadata={"format": "pt"})


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """transformers' per-load progress bars are noise in a one-line-per-command CLI."""
    from transformers.utils import logging as hf_logging  # seconds to import: only when used

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_torch(directory: str, task: str = "mlm"):
    """The bundle as transformers loads it for users (the task's Auto class): fp32, eval mode, no
    remote code."""
    import torch  # torch and transformers take seconds to import: only when a bundle is loaded
    import transformers
    from transformers.utils import logging as hf_logging

    auto_class = getattr(transformers, TASKS[task].auto_class)
    # transformers' load report would list a stored pooler the class does not hold as
    # UNEXPECTED; `check_loaded_exactly` checks every tensor more strictly than the report.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with no_progress_bars():
            model = auto_class.from_pretrained(directory, dtype=torch.float32,
                                               trust_remote_code=False, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def check_loaded_exactly(torch_model, tensors: dict[str, np.ndarray], table: Table,
                         passengers: list[str], safetensors_path: str, where: str) -> None:
    """Every written tensor came back bit for bit — through transformers, or for `passengers`
    (stored for other classes, e.g. a pooler beside an MLM head) from the file itself."""
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    stored = load_file(safetensors_path) if passengers else {}
    for name, value in tensors.items():
        source = stored if name in passengers else state
        if name not in source:
            raise FlaxlmError(f"{where}: transformers did not load tensor {name}")
        if source[name].shape != value.shape or not np.array_equal(source[name], value):
            raise FlaxlmError(f"{where}: tensor {name} differs after loading with transformers")
    left_random = sorted(set(state) - set(tensors) - set(table.aliases))
    if left_random:
        raise FlaxlmError(f"{where}: {table.hf_class} has tensor {left_random[0]} that the "
                          f"export did not write ({len(left_random)} in all; a mapping row is "
                          "missing)")
    for alias, target in table.aliases.items():
        if alias in state and not np.array_equal(state[alias], tensors[target]):
            raise FlaxlmError(f"{where}: {alias} is not tied to {target} after loading")


def export_model(workdir: str, out: str, *, step: int | None = None, overwrite: bool = False,
                 tolerance: float = TOLERANCE) -> dict:
    """Writes the release bundle of a single-model workdir's checkpoint to a local `out`: `step`,
    else the best step when the run selected one (`best.json`, e.g. the best fine-tuning epoch),
    else the latest. `flaxlm.convert.commands.export` picks this or the ELECTRA pair's."""
    check_out(out, overwrite)
    wd = Workdir.open(workdir)
    if step is None:
        best = wd.read_best()
        step = best["step"] if best else None
    config = wd.model
    table = table_for(config.arch, wd.head)
    tok = load_tokenizer(wd.tokenizer_dir)
    check_rows(tok.vocab_size, config.vocab_size, workdir)  # extra rows are exported as they are
    if config.arch == "xlmr" and tok.pad_id != config.pad_token_id:
        raise FlaxlmError(f"{workdir}: model.pad_token_id={config.pad_token_id} but the "
                          f"tokenizer pads with {tok.pad_id}; XLM-R positions depend on it")
    bos, eos = (tok.cls_id, tok.sep_id) if config.arch == "xlmr" else (None, None)
    hf_cfg = hf_config(config, wd.head, bos_id=bos, eos_id=eos, labels=wd.labels)
    _, abstract = abstract_params(config, wd.head)
    params, _, step = read_params(workdir, abstract, step)
    tensors = to_hf(table, flat_names(params), config)

    with staged_dir(out, overwrite=overwrite) as tmp:
        weights = os.path.join(tmp, "model.safetensors")
        save_safetensors(tensors, weights)
        hf_cfg.save_pretrained(tmp)
        hf_tok = write_release_tokenizer(tok, tmp, config.max_seq_len,
                                         token_types=config.type_vocab_size > 0)
        compare(tok, hf_tok, config.vocab_size, f"export of {workdir}")
        torch_model = load_torch(tmp, wd.head)
        check_loaded_exactly(torch_model, tensors, table, table.passengers(config), weights,
                             f"export of {workdir}")
        batch = parity_batch(hf_tok, min(PARITY_MAX_LEN, config.max_seq_len))
        parity = check_parity(build_model(config, params, wd.head), torch_model, batch,
                              where=f"export of {workdir}", tolerance=tolerance)
        card = model_card(name=os.path.basename(os.path.abspath(out)), hf_class=table.hf_class,
                          task=wd.head, config=config, tokenizer=tok, params=param_count(params),
                          wd=wd, step=step, parity=parity, mask_token=hf_tok.mask_token)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(card)
    return {
        "out": os.path.abspath(out),
        "step": step,
        "hf_class": table.hf_class,
        "params": param_count(params),
        **parity
    }

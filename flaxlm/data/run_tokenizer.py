"""The tokenizer a training run uses, and whether it fits the model it feeds.

`tokenizer_for_run` picks, in this order: `data.tokenizer`; the workdir's own tokenizer (so a
rerun of the workdir never retrains); a tokenizer trained once on the text training files, saved
in `<workdir>/tokenizer/`. `check_tokenizer_fits` refuses, before anything compiles, a tokenizer
whose ids the model cannot embed or whose padding id the model does not pad with.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flaxlm import storage
from flaxlm.data import sources
from flaxlm.data.tokenizers import META_FILE, Tokenizer, train_tokenizer
from flaxlm.errors import FlaxlmError

if TYPE_CHECKING:
    from flaxlm.models.config import ModelConfig

# A trained vocabulary gets at least this many running words of training text per entry: fewer
# leaves most entries seen a handful of times, their embeddings barely trained.
WORDS_PER_ENTRY = 100
# Below this a subword vocabulary is mostly single characters, whatever the corpus.
MIN_TRAINED_VOCAB = 1000
# Capped sizes are rounded down to a multiple of this: the vocabulary matmul tiles evenly.
VOCAB_MULTIPLE = 64


def default_vocab_size(model_vocab_size: int, train_files: Sequence[str],
                       text_field: str = "text") -> int:
    """The vocabulary to train when none is configured: the model's (its preset's) size, capped at
    one entry per `WORDS_PER_ENTRY` words of the training text, but not below `MIN_TRAINED_VOCAB`
    (nor above the model's). Counting stops as soon as the text is big enough for the model's."""
    needed = model_vocab_size * WORDS_PER_ENTRY
    words = 0
    for document in sources.iter_documents(train_files, text_field):
        words += sum(len(paragraph.split()) for paragraph in document)
        if words >= needed:
            return model_vocab_size
    capped = words // WORDS_PER_ENTRY // VOCAB_MULTIPLE * VOCAB_MULTIPLE
    return min(model_vocab_size, max(MIN_TRAINED_VOCAB, capped))


def tokenizer_for_run(
    tokenizer_dir: str,
    train_files: Sequence[str],
    own_dir: str,
    *,
    kind: str,
    vocab_size: int,
    model_vocab_size: int,
    is_main: bool = True,
    text_field: str = "text",
) -> str:
    """The tokenizer directory a run uses. `tokenizer_dir` (data.tokenizer) wins; empty, the
    workdir's own tokenizer directory `own_dir` is reused; absent too, one of `kind` ("unigram"
    or "wordpiece") is trained on the text files `train_files` and saved there, with `vocab_size`
    entries or, when that is 0, `default_vocab_size(model_vocab_size, train_files)`. `is_main`
    says whether this process prints the one line announcing it."""
    if tokenizer_dir:
        return tokenizer_dir
    local = own_dir
    workdir = os.path.dirname(own_dir.rstrip("/"))
    if storage.isfile(os.path.join(local, META_FILE)):
        return local
    if storage.exists(local):
        raise FlaxlmError(f"{local}: exists without {META_FILE} (an interrupted copy?); move it "
                          "away, or set --config.data.tokenizer=DIR")
    _require_text(train_files)
    vocab_size = vocab_size or default_vocab_size(model_vocab_size, train_files, text_field)
    storage.makedirs(workdir)
    # Trained aside and renamed into place: an interrupted run leaves no half tokenizer to reuse.
    staging = tempfile.mkdtemp(prefix=".tokenizer-",
                               dir=None if storage.is_remote(workdir) else workdir)
    try:
        tok = train_tokenizer(train_files, vocab_size=vocab_size, kind=kind, out_dir=staging,
                              text_field=text_field)
        if storage.is_remote(local):
            # Processes that trained the same tokenizer upload identical bytes.
            storage.upload_files(staging, local, last=META_FILE)
        else:
            try:
                os.rename(staging, local)
            except OSError:
                # Another process of this run renamed its (identical) tokenizer first.
                if not os.path.isfile(os.path.join(local, META_FILE)):
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if is_main:
        print(
            f"flaxlm: data.tokenizer is empty: trained a {kind} tokenizer of "
            f"{tok.vocab_size} tokens on {', '.join(train_files)} into {local}; reruns of this "
            "workdir reuse it", flush=True)
    return local


def _require_text(train_files: Sequence[str]) -> None:
    if not train_files:
        raise FlaxlmError("data.tokenizer and data.train_files are both empty: set "
                          "--config.data.train_files=TEXT_FILES (a tokenizer is trained on them) "
                          "or --config.data.tokenizer=DIR")
    for spec in train_files:
        if sources.is_prepared(spec):
            used = sources.read_prepared_meta(spec).get("tokenizer")
            hint = f"the one they were prepared with ({used})" if used else "theirs"
            raise FlaxlmError(f"data.tokenizer is empty but {spec} holds prepared shards (token "
                              f"ids): set --config.data.tokenizer to {hint}")
        if spec.startswith(sources.TFDS_PREFIX):
            raise FlaxlmError(f"data.tokenizer is empty and {spec} is a TFDS dataset: train one "
                              "with `flaxlm tokenizer --corpus TEXT_FILES ...` and set "
                              "--config.data.tokenizer=DIR")


def check_tokenizer_fits(tokenizer: Tokenizer, model: ModelConfig, *, model_source: str) -> None:
    """Refuses a tokenizer the model cannot take; `model_source` names where the model's shapes
    come from (a preset, init_from's config.json, the workdir's checkpoint)."""
    if tokenizer.vocab_size > model.vocab_size:
        # jnp.take fills out-of-range rows with NaN: every update would be skipped, silently.
        raise FlaxlmError(
            f"the tokenizer in {tokenizer.path} has {tokenizer.vocab_size} tokens but the model "
            f"({model_source}) embeds only model.vocab_size={model.vocab_size}: use the tokenizer "
            "the model was trained with, or a model whose vocab_size is at least "
            f"{tokenizer.vocab_size}")
    if tokenizer.pad_id != model.pad_token_id:
        raise FlaxlmError(
            f"the tokenizer in {tokenizer.path} pads with id {tokenizer.pad_id} but the model "
            f"({model_source}) has pad_token_id={model.pad_token_id}; the two must agree (the "
            "model treats its pad id as padding, XLM-R positions skip it): use the tokenizer the "
            "model was trained with")

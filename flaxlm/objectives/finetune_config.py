"""The `finetune` config section, shared by every fine-tuning objective, and k-fold slicing.

  finetune.epochs       > 0: train.steps = epochs × steps per epoch, an evaluation after each
  finetune.layer_decay  layer-wise learning-rate decay factor d in (0, 1]; 1.0 is off
  finetune.layer_decay_style  flaxlm (top layer d, embeddings d^(L+1)) | electra (ELECTRA's
                        _get_layer_lrs: top layer d², embeddings d^(L+2)); flaxlm/optim.py
  finetune.head_lr_scale  the fresh task head's learning-rate factor (1.0: the base rate); for
                        releases whose final hidden states are small (flaxlm/optim.py)
  finetune.fresh_init   truncated_normal (BERT TF) | normal (transformers) | glorot_uniform
                        (ELECTRA's heads): how the weights init_from does not provide (the task
                        head, a fresh pooler) are drawn; flaxlm/models/layers.py FRESH_INITS
  finetune.folds        K >= 2: `flaxlm finetune` runs K trainings, fold i evaluating on the i-th
                        of K contiguous slices of the training data and training on the rest
  finetune.fold         the fold one run trains (set by `flaxlm finetune`; -1: none)
  finetune.seeds        N >= 1: `flaxlm finetune` runs seeds seed, seed+1, …, seed+N-1
  finetune.test_on      best: data.test_files scored on the best dev epoch's weights; last: on
                        the last epoch's (SELECTRA's protocol, flaxlm/run/results.py)

`epochs`, `layer_decay`, `layer_decay_style`, `head_lr_scale` and `fresh_init` reach the objective
through the fields of the same name in its config dataclass (`objective_fields`); an objective
without them (MLM) refuses a non-default value.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence, TypeVar

import ml_collections

from flaxlm.errors import FlaxlmError

# Settings an objective config dataclass may declare and that the `finetune` section sets.
OBJECTIVE_FIELDS = {
    "epochs": 0,
    "layer_decay": 1.0,
    "layer_decay_style": "flaxlm",
    "head_lr_scale": 1.0,
    "fresh_init": "truncated_normal"
}
TEST_ON = ("best", "last")  # which epoch's weights score data.test_files
T = TypeVar("T")


def section() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.epochs = OBJECTIVE_FIELDS["epochs"]
    c.layer_decay = OBJECTIVE_FIELDS["layer_decay"]
    c.layer_decay_style = OBJECTIVE_FIELDS["layer_decay_style"]
    c.head_lr_scale = OBJECTIVE_FIELDS["head_lr_scale"]
    c.fresh_init = OBJECTIVE_FIELDS["fresh_init"]
    c.folds = 0
    c.fold = -1
    c.seeds = 1
    c.test_on = "best"
    return c


def objective_fields(config_cls: type, finetune: Mapping[str, Any],
                     objective: str) -> dict[str, Any]:
    """The `finetune.*` values the objective's config dataclass takes (epochs, layer_decay)."""
    declared = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: finetune.get(k, default) for k, default in OBJECTIVE_FIELDS.items()}
    for key, default in OBJECTIVE_FIELDS.items():
        if key not in declared and values[key] != default:
            raise FlaxlmError(f"finetune.{key}={values[key]} does not apply to objective "
                              f"{objective!r} (fine-tuning objectives only)")
    return {k: values[k] for k in OBJECTIVE_FIELDS if k in declared}


def validate(finetune: Mapping[str, Any], eval_files: Sequence[str]) -> None:
    folds, fold, seeds = finetune["folds"], finetune["fold"], finetune["seeds"]
    if folds == 1 or folds < 0:
        raise FlaxlmError(f"finetune.folds must be 0 (off) or at least 2, got {folds}")
    if fold != -1 and not 0 <= fold < folds:
        raise FlaxlmError(f"finetune.fold={fold} must be -1 or in [0, finetune.folds={folds})")
    if seeds < 1:
        raise FlaxlmError(f"finetune.seeds must be at least 1, got {seeds}")
    if finetune.get("test_on", "best") not in TEST_ON:
        raise FlaxlmError(f"finetune.test_on={finetune['test_on']!r}: one of {', '.join(TEST_ON)}")
    if folds and eval_files:
        raise FlaxlmError("finetune.folds evaluates each fold on its held-out slice of the "
                          "training data: leave data.eval_files empty (data.test_files is "
                          "evaluated once on each fold's best epoch)")


def fold_slice(count: int, folds: int, fold: int) -> tuple[int, int]:
    """[start, end) of fold `fold` of `folds` contiguous slices of `count` items (sizes differ
    by at most one, the larger ones first, as scikit-learn's unshuffled KFold)."""
    if count < folds:
        raise FlaxlmError(f"finetune.folds={folds} needs at least {folds} training examples, "
                          f"the data has {count}")
    size, extra = divmod(count, folds)
    start = fold * size + min(fold, extra)
    return start, start + size + (fold < extra)


def split(items: Sequence[T], folds: int, fold: int) -> tuple[list[T], list[T]]:
    """(training part, held-out part) of `items` for one fold; (all, []) without folds."""
    if folds < 2 or fold < 0:
        return list(items), []
    start, end = fold_slice(len(items), folds, fold)
    return [*items[:start], *items[end:]], list(items[start:end])

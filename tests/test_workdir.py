"""`Workdir`: workdirs written before it still open, one test tells a workdir from a Hugging Face
directory, and a file of the wrong kind is refused in one line naming it."""

import dataclasses
import json

import numpy as np
import pytest

from flaxlm.convert.model_io import abstract_params
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from flaxlm.models.param_tree import flat_names, unflatten_like
from flaxlm.run.checkpoint import read_params, write_params
from flaxlm.run.workdir import ELECTRA_PAIR, SINGLE, Workdir, is_workdir, open_or_import

TINY = preset("tiny", vocab_size=64)


def write_json(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_a_classifier_imported_before_the_workdir_type_opens(tmp_path):
    """`flaxlm import` wrote objective "classify" and `data_position` into the checkpoint."""
    model = dataclasses.replace(TINY, num_labels=3)
    run = {
        "model": dataclasses.asdict(model),
        "head": "token_classification",
        "objective": "classify",
        "labels": ["O", "B-PER", "I-PER"],
        "tokenizer": "tokenizer"
    }
    write_json(tmp_path / "config.json", {"config": {"source": "hf-import"}, **run})
    _, abstract = abstract_params(model, "token_classification")
    params = unflatten_like(abstract, {
        k: np.zeros(v.shape, v.dtype)
        for k, v in flat_names(abstract).items()
    })
    write_params(str(tmp_path), 0, params, {"step": 0, "data_position": 0, **run})

    wd = Workdir.open(str(tmp_path))
    assert (wd.head, wd.kind, wd.objective) == ("token_classification", SINGLE,
                                                "token_classification")
    assert wd.model == model and wd.labels == ["O", "B-PER", "I-PER"]
    assert wd.tokenizer_dir == str(tmp_path / "tokenizer")
    _, meta, step = read_params(wd.path, abstract)
    assert step == 0 and meta["data_position"] == 0  # old checkpoints load as they were written


def test_workdirs_from_before_heads_and_objectives_were_named(tmp_path):
    write_json(tmp_path / "old" / "config.json", {"model": dataclasses.asdict(TINY)})
    old = Workdir.open(str(tmp_path / "old"))
    assert (old.head, old.objective, old.kind) == ("mlm", "mlm", SINGLE)
    write_json(tmp_path / "pair" / "config.json", {
        "model": dataclasses.asdict(TINY),
        "head": "electra",
        "objective": "electra"
    })
    pair = Workdir.open(str(tmp_path / "pair"))
    assert pair.kind == ELECTRA_PAIR and pair.model.arch == "electra"
    assert pair.saved_model == TINY


def test_one_test_tells_a_workdir_from_a_hugging_face_directory(tmp_path):
    write_json(tmp_path / "run" / "config.json", {"model": dataclasses.asdict(TINY)})
    write_json(tmp_path / "hf" / "config.json", {"model_type": "bert", "vocab_size": 64})
    assert is_workdir(str(tmp_path / "run")) and not is_workdir(str(tmp_path / "hf"))
    imported = []

    def fake_import(hf_dir: str, into: str) -> None:
        imported.append(hf_dir)
        write_json(tmp_path / "into" / "config.json", {"model": dataclasses.asdict(TINY)})

    assert open_or_import(str(tmp_path / "run"), fake_import, "unused").path == str(
        tmp_path / "run") and imported == []
    wd = open_or_import(str(tmp_path / "hf"), fake_import, str(tmp_path / "into"))
    assert imported == [str(tmp_path / "hf")] and wd.path == str(tmp_path / "into")


def test_a_file_of_the_wrong_kind_is_refused_in_one_line_naming_it(tmp_path):
    write_json(tmp_path / "hf" / "config.json", {"model_type": "bert"})
    with pytest.raises(FlaxlmError) as e:
        Workdir.open(str(tmp_path / "hf"))
    assert str(e.value).startswith(f"{tmp_path}/hf/config.json: not a flaxlm run config")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "config.json").write_text("{not json")
    for path, error in ((tmp_path / "garbled", "config.json: not valid JSON"), (tmp_path / "empty",
                                                                                "no config.json")):
        with pytest.raises(FlaxlmError) as e:
            is_workdir(str(path))
        assert str(path) in str(e.value) and error in str(e.value)
        assert "\n" not in str(e.value)

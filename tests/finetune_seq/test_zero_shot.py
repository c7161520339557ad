"""Zero-shot classification by flaxlm's model ranks labels as transformers' pipeline does on the
export; the export also serves the text-classification pipeline with its label names."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from flaxlm import cli
from flaxlm.convert.commands import export
from flaxlm.convert.model_io import abstract_params, build_model
from flaxlm.data import pair_batches
from flaxlm.data.pairs import Example
from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset
from flaxlm.models.param_tree import flat_names, unflatten_like
from flaxlm.run.checkpoint import write_params
from flaxlm.tasks.zero_shot import zero_shot

NLI_LABELS = ["entailment", "neutral", "contradiction"]
TEXTS = ["El equipo ganó la final de la copa.", "El paquete instala el servidor de correo."]
CANDIDATES = ["deportes", "informática", "cocina", "política"]
TEMPLATE = "Este ejemplo es {}."
ATOL = 1e-5


def _classifier_workdir(path, tokenizer, labels, seed=0):
    """A sequence-classifier workdir as `flaxlm train` leaves it, with trained-looking weights."""
    config = dataclasses.replace(preset("tiny"), vocab_size=tokenizer.vocab_size,
                                 pad_token_id=tokenizer.pad_id, num_labels=len(labels))
    os.makedirs(path)
    shutil.copytree(tokenizer.path, os.path.join(path, "tokenizer"))
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "config": {},
                "model": dataclasses.asdict(config),
                "labels": labels,
                "objective": "sequence_classification",
                "head": "sequence_classification",
                "tokenizer": "tokenizer"
            }, f)
    _, abstract = abstract_params(config, "sequence_classification")
    rng = np.random.default_rng(seed)
    flat = {
        name: (rng.normal(0, 0.3, a.shape) + name.endswith("norm/scale")).astype(np.float32)
        for name, a in flat_names(abstract).items()
    }
    params = unflatten_like(abstract, flat)
    write_params(str(path), 5, params, {"step": 5})
    return config, params


@pytest.fixture(scope="module")
def nli_export(es_unigram, tmp_path_factory):
    root = tmp_path_factory.mktemp("nli")
    workdir = str(root / "run")
    config, params = _classifier_workdir(workdir, es_unigram, NLI_LABELS)
    export(workdir, str(root / "export"))
    return workdir, str(root / "export"), config, params


@pytest.mark.parametrize("multi_label", [False, True])
def test_ranks_and_scores_equal_the_pipeline(nli_export, multi_label):
    from transformers import pipeline

    workdir, hf_dir, _, _ = nli_export
    classify = pipeline("zero-shot-classification", model=hf_dir, tokenizer=hf_dir, device="cpu")
    for model in (workdir, hf_dir):  # a flaxlm workdir, and the export imported back
        ours = zero_shot(model, TEXTS, CANDIDATES, template=TEMPLATE, multi_label=multi_label)
        for text, got in zip(TEXTS, ours):
            want = classify(text, CANDIDATES, hypothesis_template=TEMPLATE, multi_label=multi_label)
            assert got["labels"] == want["labels"], (model, text)
            np.testing.assert_allclose(got["scores"], want["scores"], rtol=0, atol=ATOL)
            # Neighbours further apart than 10× the tolerance: the order is the model's, not
            # rounding's.
            assert min(-np.diff(want["scores"])) > 10 * ATOL


def test_export_serves_text_classification_with_label_names(nli_export, es_unigram):
    from transformers import pipeline

    _, hf_dir, config, params = nli_export
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["label2id"] == {name: i for i, name in enumerate(NLI_LABELS)}
    predicted = pipeline("text-classification", model=hf_dir, tokenizer=hf_dir, device="cpu")(TEXTS)
    rows = pair_batches.encode(es_unigram, [Example(t, None, "") for t in TEXTS], 64, {}).rows
    logits = np.asarray(build_model(config, params, "sequence_classification")(rows))
    assert [p["label"] for p in predicted] == [NLI_LABELS[i] for i in logits.argmax(-1)]


def test_a_model_without_entailment_is_refused(es_unigram, tmp_path):
    workdir = str(tmp_path / "run")
    _classifier_workdir(workdir, es_unigram, ["different", "same"])
    with pytest.raises(FlaxlmError, match="no entailment label among different, same"):
        zero_shot(workdir, TEXTS, CANDIDATES)
    with pytest.raises(FlaxlmError, match="has no {} where the label goes"):
        zero_shot(workdir, TEXTS, CANDIDATES, template="Trata de deportes.")


def test_cli(nli_export, capsys):
    workdir = nli_export[0]
    assert cli.main([
        "zero-shot", "--model", workdir, "--labels", ",".join(CANDIDATES), "--template", TEMPLATE,
        TEXTS[0]
    ]) == 0
    out = capsys.readouterr().out.splitlines()
    best = zero_shot(workdir, TEXTS[:1], CANDIDATES, template=TEMPLATE)[0]
    assert out[0] == TEXTS[0] and out[1].split()[-1] == best["labels"][0]
    assert len(out) == 1 + len(CANDIDATES)
    assert cli.main(["zero-shot", "--model", "/nonexistent", "--labels", "a", "x"]) == 2

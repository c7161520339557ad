"""An ELECTRA pre-training run fine-tuned as a pair classifier, then exported: the discriminator (not the generator) is the encoder, and the export is
`ElectraForSequenceClassification` with ELECTRA's GELU head."""

import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest

from flaxlm import cli
from flaxlm.run.checkpoint import write_params
from flaxlm.convert.electra import abstract_pair
from flaxlm.models.config import preset
from flaxlm.models.electra import generator_config
from flaxlm.models.param_tree import flat_names, unflatten_like
from tests.conftest import REPO
from tests.finetune_seq.conftest import DEV_TSV, TRAIN_TSV

CONFIG = os.path.join(REPO, "configs", "pairs_es_same_doc.py")


def _electra_workdir(path, tokenizer):
    """An ELECTRA pre-training workdir (embedding 32 ≠ hidden 64) with random weights; arch
    "bert", as the SELECTRA presets name it."""
    config = dataclasses.replace(preset("tiny"), arch="bert", embedding_size=32,
                                 vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
    os.makedirs(path)
    shutil.copytree(tokenizer.path, os.path.join(path, "tokenizer"))
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "config": {},
                "model": dataclasses.asdict(config),
                "objective": "electra",
                "head": "electra",
                "tokenizer": "tokenizer"
            }, f)
    _, abstract = abstract_pair(config, generator_config(config))
    rng = np.random.default_rng(0)
    flat = {
        name: (rng.normal(0, 0.1, a.shape) + name.endswith("norm/scale")).astype(np.float32)
        for name, a in flat_names(abstract).items()
    }
    write_params(path, 7, unflatten_like(abstract, flat), {"step": 7})
    return flat


@pytest.mark.slow  # a train step, an eval step and export's parity check compile
def test_fine_tuned_electra_discriminator_exports_as_electra(es_unigram, tmp_path, capsys):
    pretrained = str(tmp_path / "pre")
    electra = _electra_workdir(pretrained, es_unigram)
    workdir = str(tmp_path / "run")
    assert cli.main([
        "train", "--config", CONFIG, "--workdir", workdir, f"--config.init_from={pretrained}",
        f"--config.data.train_files={TRAIN_TSV}", f"--config.data.eval_files={DEV_TSV}",
        f"--config.data.test_files={DEV_TSV}", "--config.data.seq_len=32",
        "--config.train.batch_size=32", "--config.finetune.epochs=1"
    ]) == 0
    out = capsys.readouterr().out
    loaded = re.search(r"weights: (\d+) tensors from init_from \([^)]*step 7\); fresh: ([^;\n]+)",
                       out)
    assert loaded, out
    discriminator = [n for n in electra if n.startswith(("embeddings/", "discriminator/"))]
    assert int(loaded.group(1)) == len(discriminator)

    bundle = tmp_path / "export"
    assert cli.main(["export", "--workdir", workdir, "--out", str(bundle)]) == 0
    hf = json.loads((bundle / "config.json").read_text())
    assert hf["architectures"] == ["ElectraForSequenceClassification"]
    assert (hf["embedding_size"], hf["hidden_size"]) == (32, 64)
    assert hf["id2label"] == {"0": "different", "1": "same"}

"""An ELECTRA pre-training workdir (head "electra", generator + discriminator) where one model is
expected: each use stops before reading any weight, with one line naming the workdir and what to
use instead; fill-mask on an exported pair uses its generator (the discriminator has no MLM head,
and transformers' pipeline would fill with a random one)."""

import dataclasses
import json

import pytest

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import preset


def test_electra_pair_uses_stop_early_or_take_the_generator(tmp_path):
    from flaxlm.convert.fill_mask import masked_lm_dir
    from flaxlm.objectives.distill_bert import DistilBert, DistilBertConfig
    from flaxlm.tasks.zero_shot import zero_shot
    from flaxlm.vocab.prune import prune_vocab

    # config.json and an empty checkpoints/: no weights or tokenizer, so only an early stop passes.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({
            "model": dataclasses.asdict(preset("tiny")),
            "head": "electra",
            "objective": "electra"
        }))
    pair = rf"{run}: an ELECTRA pre-training run \(generator \+ discriminator"
    with pytest.raises(FlaxlmError, match=pair + r".*prune-vocab prunes one model: fine-tune "):
        prune_vocab(str(run), str(tmp_path / "pruned"), corpus=["unread.txt"])
    with pytest.raises(FlaxlmError, match=pair + r".*zero-shot needs .*configs/xnli_es.py"):
        zero_shot(str(run), ["Un testo."], ["a", "b"])
    with pytest.raises(FlaxlmError, match=r"is an ELECTRA pre-training run.*objective minilmv2"):
        DistilBert(DistilBertConfig(teacher=str(run))).plan_data(None)

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(
        json.dumps({
            "model_type": "electra",
            "architectures": ["ElectraForPreTraining"]
        }))
    (bundle / "model.safetensors").write_bytes(b"")
    with pytest.raises(FlaxlmError, match=r"has no MLM head; fill-mask needs its generator"):
        masked_lm_dir(str(bundle))
    (bundle / "generator").mkdir()
    (bundle / "generator" / "config.json").write_text(
        json.dumps({
            "model_type": "electra",
            "architectures": ["ElectraForMaskedLM"]
        }))
    (bundle / "generator" / "model.safetensors").write_bytes(b"")
    assert masked_lm_dir(str(bundle)) == str(bundle / "generator")
    assert masked_lm_dir(str(bundle / "generator")) == str(bundle / "generator")

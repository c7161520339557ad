"""A DistilBERT (no token types) fine-tuned on text pairs with `flaxlm finetune`, then exported:
the release's tokenizer and DistilBertForSequenceClassification, run as transformers users run
them, give flaxlm's logits on pair inputs."""

import json
import os

import numpy as np
import pytest

from flaxlm import cli
from flaxlm.convert.commands import export
from flaxlm.convert.parity import flax_outputs
from flaxlm.data import pair_batches
from flaxlm.data.pairs import read_examples
from flaxlm.models.config import preset
from tests.conftest import REPO
from tests.finetune_seq.mlm_workdir import write_mlm_workdir
from tests.convert.conftest import TOL, load_flax

CONFIG = os.path.join(REPO, "configs", "pairs_es_same_doc.py")
SEQ_LEN = 32

_WORDS = ("el gato duerme en la casa", "los archivos del sistema", "una copia de seguridad",
          "la red no responde", "muestra el tamaño de los bloques", "borra el directorio vacío")


def _pairs_jsonl(path, count: int) -> str:
    """`count` pairs of short Spanish phrases; "same" when both halves share their phrase."""
    rng = np.random.default_rng(len(str(path)))
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            a, b = rng.integers(len(_WORDS), size=2)
            f.write(
                json.dumps({
                    "text": f"{_WORDS[a]} {i}",
                    "text_pair": _WORDS[b] + " otra vez",
                    "label": "same" if a == b else "different"
                }) + "\n")
    return str(path)


def _distilbert_workdir(path, tokenizer) -> None:
    """A DistilBERT MLM workdir with odd shapes (12-dim heads, FFN 50, 3 layers), random weights."""
    config = preset("distilbert-base-multilingual", vocab_size=tokenizer.vocab_size, hidden_size=36,
                    num_layers=3, num_heads=3, intermediate_size=50, max_position_embeddings=40,
                    pad_token_id=tokenizer.pad_id)
    write_mlm_workdir(path, tokenizer, config, std=0.2, step=3)


@pytest.mark.slow  # a train step, an eval step and export's parity check compile
def test_distilbert_pair_classifier_exports_with_flaxlm_logits(es_wordpiece, tmp_path):
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pretrained, workdir, bundle = (str(tmp_path / d) for d in ("pre", "run", "export"))
    _distilbert_workdir(pretrained, es_wordpiece)
    train = _pairs_jsonl(tmp_path / "train.jsonl", 32)
    dev = _pairs_jsonl(tmp_path / "dev.jsonl", 12)
    assert cli.main([
        "finetune", "--config", CONFIG, "--workdir", workdir, "--no-progress",
        f"--config.init_from={pretrained}", f"--config.data.train_files={train}",
        f"--config.data.eval_files={dev}", "--config.data.test_files=",
        f"--config.data.seq_len={SEQ_LEN}", "--config.train.batch_size=8",
        "--config.train.learning_rate=1e-3", "--config.finetune.epochs=1"
    ]) == 0

    exported = export(workdir, bundle)
    assert exported["hf_class"] == "DistilBertForSequenceClassification"
    hf_tok = AutoTokenizer.from_pretrained(bundle)
    torch_model = AutoModelForSequenceClassification.from_pretrained(bundle).eval()
    assert isinstance(torch_model, transformers.DistilBertForSequenceClassification)

    examples = read_examples(dev)
    texts, text_pairs = [e.text for e in examples], [e.text_pair for e in examples]
    rows = pair_batches.encode(es_wordpiece, examples, SEQ_LEN, {}, token_types=False).rows
    theirs = hf_tok(texts, text_pairs, truncation=True, max_length=SEQ_LEN, padding="max_length",
                    return_tensors="pt")
    assert set(theirs) == {"input_ids", "attention_mask"}  # DistilBERT reads no token types
    np.testing.assert_array_equal(rows["input_ids"], theirs["input_ids"].numpy())
    np.testing.assert_array_equal(rows["attention_mask"], theirs["attention_mask"].numpy())

    _, _, model = load_flax(workdir, exported["step"])
    ours_NxC = flax_outputs(model, {k: rows[k] for k in pair_batches.ROW_KEYS})["logits"]
    with torch.no_grad():
        theirs_NxC = torch_model(**theirs).logits.numpy()
    assert ours_NxC.shape == theirs_NxC.shape == (len(examples), 2)
    # The fresh head's logits are small (~0.05 here): the differences are held to a thousandth
    # of their spread over the examples, not to export's absolute tolerance alone.
    spread = np.abs(theirs_NxC - theirs_NxC[:1]).max()
    assert spread > 1e-3  # input-dependent: a check on constant outputs would prove little
    assert np.abs(ours_NxC - theirs_NxC).max() <= min(TOL, 1e-3 * spread)

    # The pipeline on a pair, as users call it: flaxlm's probabilities.
    classify = transformers.pipeline("text-classification", model=bundle, device="cpu", top_k=None)
    scores = {
        p["label"]: p["score"]
        for p in classify({
            "text": texts[0],
            "text_pair": text_pairs[0]
        })
    }
    probs_C = np.exp(ours_NxC[0] - ours_NxC[0].max())
    probs_C /= probs_C.sum()
    labels = json.loads(open(os.path.join(bundle, "config.json"), encoding="utf-8").read())
    assert labels["id2label"] == {"0": "different", "1": "same"}
    assert [scores["different"], scores["same"]] == pytest.approx(probs_C.tolist(), abs=1e-5)

"""Length buckets: fine-tuning batches cut to a few fixed lengths (flaxlm/data/length_buckets.py),
the same length on every process, nothing real cut off; a run compiles its steps at most once
per bucket and scores exactly as the uncut run."""

import contextlib
import dataclasses
import io
import os

import jax
import numpy as np
import pytest

from flaxlm import cli
from flaxlm.data import labelled, length_buckets, pair_batches, pairs
from flaxlm.data.pipeline import DataConfig
from flaxlm.data.tokenizers import load_tokenizer
from flaxlm.errors import FlaxlmError
from flaxlm.objectives.token_classification import TokenClassification, TokenClassificationConfig
from flaxlm.run.protocol import DataContext
from flaxlm.run.workdir import Workdir
from tests.conftest import REPO
from tests.finetune.test_end_to_end import pretrained  # noqa: F401 (a pytest fixture)
from tests.finetune.test_labelled import fixture

NER_TRAIN, NER_DEV = fixture("esp-train-head.txt"), fixture("esp-testa-head.txt")
BUCKETS = (16, 32, 64)


def test_bucket_specs():
    assert length_buckets.parse("pow2", 128) == (16, 32, 64, 128)
    assert length_buckets.parse("pow2", 100) == (16, 32, 64, 100)
    assert length_buckets.parse("none", 128) == (128, )
    assert length_buckets.parse("64, 32", 128) == (32, 64, 128)
    assert length_buckets.bucket_length(17, (16, 32, 64)) == 32
    assert length_buckets.bucket_length(16, (16, 32, 64)) == 16
    for bad in ("pow3", "32,256", "0,64"):
        with pytest.raises(FlaxlmError, match=f"data.length_buckets='{bad}'"):
            length_buckets.parse(bad, 128)


def _ner_context(tokenizer, buckets, process=(0, 1), batch=2):
    data = DataConfig(train_files=(NER_TRAIN, ), eval_files=(NER_DEV, ), seq_len=64,
                      length_buckets=buckets)
    return DataContext(data, tokenizer, seed=1, host_batch_size=batch // process[1],
                       process_index=process[0], process_count=process[1])


def _ner_batches(tokenizer, buckets, process=(0, 1), steps=12):
    objective = TokenClassification(TokenClassificationConfig(format="conll2002"))
    ctx = _ner_context(tokenizer, buckets, process)
    ctx = dataclasses.replace(ctx, plan=objective.plan_data(ctx))
    stream = objective.train_batches(ctx, 0)
    return [next(stream) for _ in range(steps)], objective.eval_batches(ctx)


def test_token_batches_are_cut_to_the_bucket_of_their_longest_row(tiny_tokenizer_dir):
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    full_train, full_eval = _ner_batches(tokenizer, ())
    cut_train, cut_eval = _ner_batches(tokenizer, BUCKETS)
    lengths = set()
    for full, cut in zip(full_train + full_eval, cut_train + cut_eval, strict=True):
        length = cut["input_ids"].shape[1]
        lengths.add(length)
        longest = int(np.max(np.count_nonzero(full["attention_mask"], axis=1)))
        assert length == length_buckets.bucket_length(longest, BUCKETS)
        for k, v in full.items():
            np.testing.assert_array_equal(cut[k], v[:, :length] if v.ndim == 2 else v)
        # What was cut off is padding only: no token, no label, no word.
        assert not full["attention_mask"][:, length:].any()
        assert not full["label_weights"][:, length:].any()
        assert (full["word_index"][:, length:] == -1).all()
    assert len(lengths) > 1  # the fixture does exercise several buckets
    # Two processes cut their halves of each global batch to the same length.
    halves = [_ner_batches(tokenizer, BUCKETS, process=(p, 2))[0] for p in range(2)]
    for a, b, whole in zip(*halves, cut_train):
        jax.tree.map(lambda x, y, w: np.testing.assert_array_equal(np.concatenate([x, y]), w), a, b,
                     whole)


def test_pair_batches_are_cut_to_the_bucket_of_their_longest_row(tiny_tokenizer_dir):
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    sentences = [" ".join(s.words) for s in labelled.read_sentences(NER_DEV, "conll2002")][:40]
    examples = [
        pairs.Example(text=s, text_pair=None, label=str(i % 2)) for i, s in enumerate(sentences)
    ]
    rows = pair_batches.encode(tokenizer, examples, 64, {"0": 0, "1": 1}).rows
    full = pair_batches.eval_batches(rows, host_batch_size=8)
    cut = pair_batches.eval_batches(rows, host_batch_size=8, buckets=BUCKETS)
    stream = pair_batches.train_stream(rows, seed=0, host_batch_size=8, start_example=0,
                                       buckets=BUCKETS)
    halves = [
        pair_batches.train_stream(rows, seed=0, host_batch_size=4, start_example=0, process_index=p,
                                  process_count=2, buckets=BUCKETS) for p in range(2)
    ]
    for f, c in zip(full, cut, strict=True):
        length = c["input_ids"].shape[1]
        assert length == length_buckets.bucket_length(int(f["attention_mask"].sum(1).max()),
                                                      BUCKETS)
        assert not f["attention_mask"][:, length:].any()
        np.testing.assert_array_equal(c["input_ids"], f["input_ids"][:, :length])
        whole, a, b = next(stream), next(halves[0]), next(halves[1])
        jax.tree.map(lambda x, y, w: np.testing.assert_array_equal(np.concatenate([x, y]), w), a, b,
                     whole)


def _finetune(workdir, init_from, buckets):
    args = [
        "train",
        "--config",
        os.path.join(REPO, "configs", "ner_es_conll2002.py"),
        "--workdir",
        str(workdir),
        "--no-progress",
        f"--config.init_from={init_from}",
        f"--config.data.train_files={NER_TRAIN}",
        f"--config.data.eval_files={NER_DEV}",
        "--config.finetune.epochs=2",
        "--config.train.batch_size=2",
        # Two rows a batch (one per data-parallel device) give batches of every length.
        "--config.mesh.data=2",
        "--config.mesh.tensor=4",
        "--config.data.seq_len=64",
        f"--config.data.length_buckets={buckets}",
        "--config.train.learning_rate=3e-3",
        "--config.model.hidden_dropout=0.0",
        "--config.model.attention_dropout=0.0",
        "--config.model.classifier_dropout=0.0",
        "--config.finetune.layer_decay=1.0"
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(args) == 0
    return Workdir(str(workdir)).read_metrics(), out.getvalue()


@pytest.mark.slow  # two fine-tuning runs on the CoNLL-2002 fixture: ~2 min on the shared CPU
def test_bucketed_run_compiles_once_per_bucket_and_scores_as_the_uncut_run(
        pretrained,  # noqa: F811
        tmp_path):
    bucketed, printed = _finetune(tmp_path / "pow2", pretrained, "16,32,64")
    uncut, _ = _finetune(tmp_path / "none", pretrained, "none")
    compiles = max(r.get("train_compiles", 0) for r in bucketed)
    assert 1 < compiles <= len(BUCKETS)
    assert printed.count("the train step compiled for batch shape") == compiles - 1
    assert max(r.get("eval_compiles", 0) for r in bucketed) <= len(BUCKETS)
    assert max(r.get("train_compiles", 0) for r in uncut) == 1
    evals = [[r for r in run if "eval_entity_f1" in r] for run in (bucketed, uncut)]
    assert len(evals[0]) == len(evals[1]) == 2
    for b, u in zip(*evals):
        # The same predictions: every score equal; the loss up to float summation order.
        for k in ("eval_entity_f1", "eval_accuracy", "eval_macro_f1"):
            assert b[k] == u[k], k
        np.testing.assert_allclose(b["eval_loss"], u["eval_loss"], rtol=1e-4)
    train = [[r["loss"] for r in run if "loss" in r] for run in (bucketed, uncut)]
    np.testing.assert_allclose(train[0], train[1], rtol=1e-4)

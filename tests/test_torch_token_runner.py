"""The PyTorch side of docs/flare.md's POS rows (benchmarks/runners/conll2002_torch.py): its own
CoNLL-U reader and scikit-learn scores must agree with flaxlm's reader and metrics, or the
"flaxlm vs PyTorch" column would compare two different tasks."""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks.runners.conll2002_torch import pos_scores, read_conllu
from flaxlm.data import labelled
from flaxlm.objectives.word_metrics import token_scores
from tests.conftest import REPO

ISDT_DEV = os.path.join(os.path.dirname(REPO), "shared", "data", "ud", "it_isdt-ud-dev.conllu")


def test_conllu_reader_sees_the_words_and_tags_flaxlm_sees(tmp_path):
    # A multiword token (`della` = `di` + `la`) and an empty node are not words of the text.
    path = tmp_path / "two.conllu"
    path.write_text(
        "# text = Il gatto della casa.\n"
        "1\tIl\til\tDET\t_\t_\t2\tdet\t_\t_\n2\tgatto\tgatto\tNOUN\t_\t_\t0\troot\t_\t_\n"
        "3-4\tdella\t_\t_\t_\t_\t_\t_\t_\t_\n3\tdi\tdi\tADP\t_\t_\t5\tcase\t_\t_\n"
        "4\tla\til\tDET\t_\t_\t5\tdet\t_\t_\n4.1\tè\tessere\tAUX\t_\t_\t_\t_\t_\t_\n"
        "5\tcasa\tcasa\tNOUN\t_\t_\t2\tnmod\t_\t_\n6\t.\t.\tPUNCT\t_\t_\t2\tpunct\t_\t_\n\n"
        "1\tSì\tsì\tINTJ\t_\t_\t0\troot\t_\t_\n", encoding="utf-8")
    ours = [(list(s.words), list(s.labels)) for s in labelled.read_sentences(str(path), "conllu")]
    assert read_conllu(str(path)) == ours == [(["Il", "gatto", "di", "la", "casa", "."
                                                ], ["DET", "NOUN", "ADP", "DET", "NOUN", "PUNCT"]),
                                              (["Sì"], ["INTJ"])]
    if os.path.isfile(ISDT_DEV):  # the real treebank, where ../shared/data is present
        ours = [(list(s.words), list(s.labels))
                for s in labelled.read_sentences(ISDT_DEV, "conllu")]
        assert read_conllu(ISDT_DEV) == ours and len(ours) == 564


def test_pos_scores_equal_flaxlm_token_scores():
    rng = np.random.default_rng(0)
    tags = ["NOUN", "VERB", "DET", "ADP", "X"]
    gold = [[str(x) for x in rng.choice(tags[:4], n)] for n in (5, 9, 3)]
    # Wrong about a third of the time, including a tag gold never has (it counts in the macro).
    predicted = [[g if rng.random() > 0.35 else str(rng.choice(tags)) for g in s] for s in gold]
    theirs = pos_scores([([""] * len(s), s) for s in gold], predicted)
    ours = token_scores(gold, predicted)
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
        assert abs(theirs[key] - ours[key]) < 1e-12, (key, theirs[key], ours[key])


def test_electra_discriminator_resaved_as_bert_computes_the_same(tmp_path):
    # benchmarks/electra_as_bert.py lets the BERT-only PyTorch loop start from a discriminator:
    # only sound if the re-saved model is the same function, which convert() asserts; here a
    # random discriminator made by transformers goes through the command line.
    import subprocess
    import sys

    import torch
    from transformers import BertModel, ElectraConfig, ElectraForPreTraining, ElectraModel
    config = ElectraConfig(vocab_size=97, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=24)
    torch.manual_seed(0)
    ElectraForPreTraining(config).save_pretrained(tmp_path / "electra")
    subprocess.run([
        sys.executable, "-m", "benchmarks.electra_as_bert",
        str(tmp_path / "electra"),
        str(tmp_path / "bert")
    ], cwd=REPO, check=True, env={
        **os.environ, "PYTHONPATH": REPO
    })
    ids_BxL = torch.randint(0, 97, (3, 24))
    with torch.no_grad():
        want = ElectraModel.from_pretrained(tmp_path / "electra").eval()(ids_BxL)
        got = BertModel.from_pretrained(tmp_path / "bert").eval()(ids_BxL)
    assert got.last_hidden_state.shape == (3, 24, 32)
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)


def test_recipe_takes_the_dropout_overrides_flaxlm_gets():
    import pytest

    from benchmarks.flare_chain import recipe_from_config

    assert recipe_from_config("pos", [])[0].dropout == 0.1
    off = [f"--config.model.{k}_dropout=0" for k in ("hidden", "attention", "classifier")]
    assert recipe_from_config("pos", off)[0].dropout == 0.0
    with pytest.raises(SystemExit, match="one dropout rate"):
        recipe_from_config("pos", off[:2])


def test_head_lr_scale_reaches_the_classifier_group_only():
    """finetune.head_lr_scale as the PyTorch loop applies it: the classifier's param group, not
    the encoder's layer-wise rates (flaxlm's side: tests/finetune_seq/test_objective.py)."""
    import transformers

    from benchmarks.flare_chain import recipe_from_config
    from benchmarks.runners.conll2002_torch import layerwise_groups

    recipe, _ = recipe_from_config("ner", ["--config.finetune.head_lr_scale=4"])
    assert recipe.head_lr_scale == 4.0 and recipe_from_config("ner", [])[0].head_lr_scale == 1.0
    model = transformers.BertForTokenClassification(
        transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32, num_labels=3))
    classifier = {id(p) for n, p in model.named_parameters() if n.startswith("classifier.")}
    for group in layerwise_groups(model, recipe):
        in_head = {id(p) in classifier for p in group["params"]}
        assert len(in_head) == 1
        base = recipe.learning_rate * (4.0 if in_head == {True} else 1.0)
        assert group["lr"] == base if in_head == {True} else group["lr"] < base


def test_ner_table_reads_both_sides(tmp_path, capsys):
    """One flaxlm workdir and one PyTorch result side by side, on the metrics both sides log."""
    import json

    from benchmarks.flare_chain import main

    flaxlm = tmp_path / "flaxlm"
    flaxlm.mkdir()
    evals = [{
        "step": 32 * e,
        "eval_entity_f1": f,
        "eval_entity_precision": f,
        "eval_entity_recall": f,
        "eval_loss": 0.5,
        "eval_accuracy": 0.9
    } for e, f in ((1, 0.1), (2, 0.25))]
    speed = {"step": 32, "loss": 1.0, "steps_per_sec": 0.5}
    (flaxlm / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [speed, *evals]))
    epochs = [{
        "epoch": e,
        "train_loss": 1.0,
        "entity_precision": f,
        "entity_recall": f,
        "entity_f1": f
    } for e, f in ((1, 0.0), (2, 0.2))]
    (tmp_path / "torch.json").write_text(json.dumps({"epochs": epochs, "median_step_s": 4.0}))
    epochs[-1]["test_loss"] = 0.75  # written since the loop logs its held-out loss
    (tmp_path / "torch_loss.json").write_text(json.dumps({"epochs": epochs, "median_step_s": 4.0}))
    main([
        "table", "--task", "ner",
        str(flaxlm),
        str(tmp_path / "torch.json"),
        str(tmp_path / "torch_loss.json")
    ])
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].split(" | ")[1:5] == ["0.2500", "0.2500", "0.2500", "0.5000"]
    assert "0.1000, 0.2500" in rows[2]
    assert rows[3].split(" | ")[1:5] == ["0.2000", "0.2000", "0.2000", "—"]
    assert "0.25 steps/s" in rows[3] and rows[4].split(" | ")[4] == "0.7500"


def test_the_pytorch_loop_trains_on_flaxlm_s_rows(tiny_tokenizer_dir):
    """Both sides of a flaxlm-vs-PyTorch row train on the same rows: every window's token ids and
    first-sub-token labels equal, long sentences split alike (data.seq_len 24 here splits many)."""
    from transformers import AutoTokenizer

    from benchmarks.runners.conll2002_torch import encode
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.data.word_windows import encode_rows

    path = os.path.join(REPO, "data", "it", "ud", "dev.conllu")
    sentences = labelled.read_sentences(path, "conllu")
    label_ids = {x: i for i, x in enumerate(sorted({x for s in sentences for x in s.labels}))}
    tokenizer = load_tokenizer(tiny_tokenizer_dir)
    ours = encode_rows(sentences, tokenizer, label_ids, 24)
    theirs = encode(read_conllu(path), AutoTokenizer.from_pretrained(tiny_tokenizer_dir), label_ids,
                    24)
    assert ours.split_sentences > 10 and len(ours) == len(theirs)
    for i, row in enumerate(theirs):
        real = ours.input_ids_NxL[i] != tokenizer.pad_id
        labels = np.where(ours.label_weights_NxL[i] > 0, ours.labels_NxL[i], -100)[real]
        assert ours.input_ids_NxL[i][real].tolist() == row["input_ids"], i
        assert labels.tolist() == row["labels"], i
        assert ours.sentence_N[i] == row["sentence"], i


def test_the_loops_draws_over_indices_order_its_batches_of_rows(tmp_path):
    """benchmarks/flare_pos_gap.py `converse` feeds flaxlm the PyTorch loop's batch order by running
    the loop's DataLoader over row indices: it must yield the batches the loop trains on."""
    from transformers import BertConfig, BertModel

    from benchmarks.flare_chain import recipe_from_config
    from benchmarks.runners.conll2002_torch import seeded_draws
    BertModel(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32), add_pooling_layer=False).save_pretrained(tmp_path)
    recipe, _ = recipe_from_config("pos", ["--config.train.batch_size=4", "--config.seed=3"])
    rows = [{"input_ids": [1, i + 2], "labels": [0, 1]} for i in range(10)]
    model_i, by_index = seeded_draws(str(tmp_path), ["A", "B"], recipe, range(len(rows)), list)
    model_r, by_row = seeded_draws(str(tmp_path), ["A", "B"], recipe, rows,
                                   lambda batch: [r["input_ids"][1] - 2 for r in batch])
    epochs = [[list(map(int, b)) for b in by_index] for _ in range(3)]
    assert epochs == [[list(b) for b in by_row] for _ in range(3)]
    assert [len(b) for b in epochs[0]] == [4, 4, 2] and epochs[0] != epochs[1]
    assert all(sorted(sum(e, [])) == list(range(10)) for e in epochs)
    assert (model_i.classifier.weight == model_r.classifier.weight).all()


def test_the_pytorch_loop_s_held_out_loss_is_flaxlm_s_eval_loss_definition(tmp_path):
    """The loop's test loss (one pass with its predictions) is the cross-entropy over every
    labelled first sub-token divided by their count, over all batches together: transformers'
    own loss on one batch holding every row, though the pass runs batches of 2 whose labelled
    counts differ (4, 5, 1: a mean of batch means would differ)."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    from benchmarks.runners.conll2002_torch import predict_and_loss
    torch.manual_seed(0)
    model = BertForTokenClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=32, num_labels=3))
    sentences = [(["a"] * n, ["X"] * n) for n in (1, 3, 2, 4, 1)]
    rows = [{
        "input_ids": [1, *range(5, 5 + n), 2],
        "labels": [-100, *[(n + k) % 3 for k in range(n)], -100],
        "word_index": [-1, *range(n), -1],
        "sentence": s
    } for s, n in enumerate((1, 3, 2, 4, 1))]
    rows[3]["labels"][2] = -100  # a label the training data lacked: out of the loss
    _, loss = predict_and_loss(model, rows, sentences, {0: "X", 1: "Y", 2: "Z"}, batch_size=2)
    length = max(len(r["input_ids"]) for r in rows)
    pad = lambda xs, v: [x + [v] * (length - len(x)) for x in xs]  # noqa: E731
    model.eval()
    with torch.no_grad():
        whole = model(
            input_ids=torch.tensor(pad([r["input_ids"] for r in rows], 0)),
            attention_mask=torch.tensor(pad([[1] * len(r["input_ids"]) for r in rows], 0)),
            labels=torch.tensor(pad([r["labels"] for r in rows], -100))).loss.item()
    assert loss == pytest.approx(whole, rel=1e-6)

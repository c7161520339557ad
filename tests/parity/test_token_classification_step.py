"""One POS fine-tuning step, flaxlm against docs/flare.md's PyTorch loop
(benchmarks/runners/conll2002_torch.py): the same imported weights (a random
BertForTokenClassification, classifier included), the same ISDT batch, dropout off. The training
loss must be the same number and the parameters after one AdamW step the same tensors, with the
optimizer each side builds from configs/pos_it_isdt.py and FLARE's POS overrides. This guards
everything one step does that could make the two sides of the "flaxlm vs PyTorch" rows train
differently: encoding and label alignment, the loss's average, clipping, AdamW's ε and bias
correction, the learning rate at step 0, what weight decay touches."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest

from tests.conftest import REPO
from tests.convert.conftest import load_flax, make_hf_dir, read_safetensors

POS = [
    "--config.train.learning_rate=5e-5", "--config.finetune.epochs=3",
    "--config.train.batch_size=16"
]
ISDT_HEAD = os.path.join(REPO, "tests", "finetune", "fixtures", "it_isdt-dev-head.conllu")
SEQ_LEN = 24  # short enough that one sentence of the fixture is split into windows


def _flaxlm_steps(run_dir, batches_f):
    from flaxlm import run_config
    from flaxlm.experiment import build_program
    from flaxlm.objectives.registry import make_objective, with_finetune
    from flaxlm.sharding import MeshConfig, host_batch_to_global, make_mesh

    config = run_config.load(os.path.join(REPO, "configs", "pos_it_isdt.py"), POS)
    model_config, params, _ = load_flax(str(run_dir))
    model_config = dataclasses.replace(model_config, hidden_dropout=0.0, attention_dropout=0.0,
                                       classifier_dropout=0.0)
    sections = with_finetune(config.objective, config.objective_sections, config.raw["finetune"])
    mesh = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    program = build_program(make_objective(config.objective, sections), model_config, config.optim,
                            mesh, config.step)
    rng = jax.random.key_data(jax.random.key(0))
    program.set_frozen(program.init_frozen(rng))  # token classification freezes nothing
    state, metrics = program.state_from_params(params, rng), []
    for batch in batches_f:
        state, m = program.train_step(state, host_batch_to_global(mesh, batch))
        metrics.append(jax.device_get(m))
    return config, model_config, jax.device_get(state["params"]), metrics


def _torch_steps(hf_dir, batches_t, recipe):
    from transformers import AutoTokenizer, BertForTokenClassification

    from benchmarks.runners.conll2002_torch import make_optimizer, train_step

    model = BertForTokenClassification.from_pretrained(str(hf_dir), hidden_dropout_prob=0.0,
                                                       attention_probs_dropout_prob=0.0)
    model.train()
    optimizer, schedule = make_optimizer(model, recipe, total=len(batches_t))
    losses = [train_step(model, b, optimizer, schedule, recipe.max_grad_norm) for b in batches_t]
    return losses, {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_one_pos_step_matches_the_pytorch_loop(tmp_path, wp_tokenizer_dir):
    from transformers import AutoTokenizer, DataCollatorForTokenClassification

    from benchmarks.flare_chain import recipe_from_config
    from benchmarks.runners.conll2002_torch import encode
    from flaxlm.convert.commands import import_hf
    from flaxlm.convert.mappings.tables import table_for
    from flaxlm.convert.mappings.tensors import to_hf
    from flaxlm.data import labelled
    from flaxlm.data.tokenizers import load_tokenizer
    from flaxlm.data.word_windows import batch_of, encode_rows
    from flaxlm.models.param_tree import flat_names

    sentences = labelled.read_sentences(ISDT_HEAD, "conllu")
    labels = labelled.label_vocabulary(sentences)
    label_ids = {x: i for i, x in enumerate(labels)}
    hf_dir, run_dir = tmp_path / "hf", tmp_path / "run"
    make_hf_dir(hf_dir, "bert", wp_tokenizer_dir, task="token_classification",
                num_labels=len(labels), hidden=32, heads=4, intermediate=64, type_vocab=2,
                max_pos=SEQ_LEN, seed=1)
    import_hf(str(hf_dir), str(run_dir))

    # The same rows from each side's own encoder: ids, and labels on first sub-tokens only.
    rows_f = encode_rows(sentences, load_tokenizer(str(run_dir / "tokenizer")), label_ids, SEQ_LEN)
    rows_t = encode([(list(s.words), list(s.labels)) for s in sentences],
                    AutoTokenizer.from_pretrained(str(hf_dir)), label_ids, SEQ_LEN)
    assert len(rows_t) == len(rows_f.input_ids_NxL) > len(sentences)  # windows were cut
    for n, row in enumerate(rows_t):
        length = len(row["input_ids"])
        assert rows_f.input_ids_NxL[n, :length].tolist() == row["input_ids"]
        labelled_f = np.where(rows_f.label_weights_NxL[n, :length] > 0,
                              rows_f.labels_NxL[n, :length], -100)
        assert labelled_f.tolist() == row["labels"]

    # Three AdamW steps (bias correction past step 1), each side padding its own way: flaxlm
    # every row to the bucket, PyTorch to the batch's longest row. The second batch is short, as
    # an epoch's last batch is: flaxlm fills it with unlabelled rows (index -1), PyTorch does not.
    tok = load_tokenizer(str(run_dir / "tokenizer"))
    collate = DataCollatorForTokenClassification(AutoTokenizer.from_pretrained(str(hf_dir)))
    B = len(rows_t) // 2
    order = [np.arange(B), np.arange(B, 2 * B - 3), np.arange(B)]
    batches_f = [
        batch_of(rows_f, np.pad(i, (0, B - len(i)), constant_values=-1), tok) for i in order
    ]
    assert (batches_f[1]["label_weights"][-3:] == 0).all()
    batches_t = [
        collate([{
            k: rows_t[i][k]
            for k in ("input_ids", "labels")
        } for i in index]) for index in order
    ]
    config, model_config, params, metrics = _flaxlm_steps(run_dir, batches_f)
    recipe, _ = recipe_from_config("pos", POS)
    assert recipe.schedule == "constant"
    losses_t, after_t = _torch_steps(hf_dir, batches_t, recipe)
    for m, loss_t in zip(metrics, losses_t, strict=True):
        print(f"loss flaxlm {float(m['loss']):.7f} PyTorch {loss_t:.7f}")
        assert abs(float(m["loss"]) - loss_t) <= 1e-5 * loss_t
        assert np.float32(m["learning_rate"]) == np.float32(recipe.learning_rate)
    assert float(metrics[0]["grad_norm"]) > config.optim.max_grad_norm  # clipping takes part

    after_f = to_hf(table_for("bert", "token_classification"), flat_names(params), model_config)
    # The attention key biases get no gradient (a softmax ignores a shift of all its scores):
    # what each side computes for them is rounding noise, which Adam normalizes into steps of a
    # few percent of the learning rate. They stay out of the comparison.
    before = read_safetensors(hf_dir / "model.safetensors")
    worst, moved = {}, {}
    for name, value in after_f.items():
        if not name.endswith("key.bias"):
            worst[name] = np.abs(value - after_t[name]).max() / np.abs(after_t[name]).max()
            moved[name] = np.abs(after_t[name] - before[name]).max() / recipe.learning_rate
        else:
            assert np.abs(after_t[name] - before[name]).max() < 0.2 * recipe.learning_rate
    print("largest relative differences:", sorted(worst.items(), key=lambda kv: -kv[1])[:3])
    assert max(worst.values()) <= 1e-5, sorted(worst.items(), key=lambda kv: -kv[1])[:5]
    # Adam moves a weight by about the learning rate per step, whatever its gradient's size.
    assert min(moved.values()) > 1.0, moved

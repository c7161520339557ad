"""ELECTRA (issue 15): the loss against a direct reference, the replaced-label rule, one shared
embedding table trained by both losses, Gumbel sampling statistics, exact accumulation, and the
SELECTRA configs (parameter counts, generator shapes, the schedule with its restart)."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxlm import run_config
from flaxlm.models.config import preset
from flaxlm.models.electra import ElectraPreTrainingModel
from flaxlm.models.heads import param_names
from flaxlm.models.param_tree import flat_names
from flaxlm.objectives.electra import Electra, ElectraConfig, sample_tokens
from flaxlm.objectives.rank_auc import roc_auc
from flaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer
from flaxlm.run.steps import StepConfig, TrainProgram
from flaxlm.sharding import MeshConfig, host_batch_to_global, make_mesh
from tests.conftest import REPO

# Embedding width 48 differs from both towers' widths (64, generator 16): both project. One layer
# each keeps compilation short.
CONFIG = preset("electra-tiny", vocab_size=97, hidden_size=64, num_heads=2, intermediate_size=128,
                num_layers=1, embedding_size=48, max_position_embeddings=32, hidden_dropout=0.0,
                attention_dropout=0.0)
MASK_ID, PAD_ID, CLS_ID = 4, 0, 2
ROWS, LENGTH, SLOTS = 8, 16, 5


def electra_batch(rng: np.random.Generator, rows: int = ROWS) -> dict:
    """Packed-looking rows of different lengths: CLS first, distinct masked positions, unused
    slots at position 0 with weight 0 (as the pipeline leaves them), 85% of slots [MASK]ed."""
    lengths_B = rng.integers(8, LENGTH + 1, rows)
    real_BxL = np.arange(LENGTH) < lengths_B[:, None]
    original_BxL = np.where(real_BxL, rng.integers(5, CONFIG.vocab_size, (rows, LENGTH)), PAD_ID)
    original_BxL[:, 0] = CLS_ID
    positions_BxM = np.stack([rng.choice(np.arange(1, n), SLOTS, replace=False) for n in lengths_B])
    weights_BxM = (rng.random((rows, SLOTS)) < 0.8).astype(np.float32)
    positions_BxM = np.where(weights_BxM > 0, positions_BxM, 0)
    labels_BxM = np.where(weights_BxM > 0, np.take_along_axis(original_BxL, positions_BxM, 1), 0)
    input_BxL = original_BxL.copy()
    for b, m in zip(*np.nonzero((weights_BxM > 0) & (rng.random((rows, SLOTS)) < 0.85))):
        input_BxL[b, positions_BxM[b, m]] = MASK_ID
    return {
        "input_ids": input_BxL.astype(np.int32),
        "attention_mask": real_BxL.astype(np.int32),
        "token_type_ids": np.zeros((rows, LENGTH), np.int32),
        "masked_positions": positions_BxM.astype(np.int32),
        "masked_labels": labels_BxM.astype(np.int32),
        "masked_weights": weights_BxM
    }


def model_for(objective: Electra, seed: int = 0) -> ElectraPreTrainingModel:
    return objective.build_model(CONFIG, nnx.Rngs(params=seed))


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_matches_a_direct_reference():
    objective = Electra(ElectraConfig(temperature=2.0))
    model = model_for(objective)
    batch = electra_batch(np.random.default_rng(1))
    key = jax.random.key(3)
    loss, sums = nnx.jit(lambda m, b, k: objective.loss(m, b, objective.normalizers(b), dtype=jnp.
                                                        float32, dropout_key=k))(model, batch, key)
    metrics = {k: float(v) for k, v in objective.metrics(sums).items()}

    # The reference: ELECTRA's steps written out row by row in numpy, the towers as black boxes.
    # The sampling noise is the objective's (the second of three keys split from the step key).
    w_BxM, pos_BxM, lab_BxM = (batch[k]
                               for k in ("masked_weights", "masked_positions", "masked_labels"))
    gen_BxMxV = np.asarray(nnx.jit(lambda m, b: m.generator_logits(b))(model, batch), np.float64)
    gen_loss = -np.sum(w_BxM * np.take_along_axis(_log_softmax(gen_BxMxV), lab_BxM[..., None],
                                                  -1)[..., 0]) / w_BxM.sum()
    noise_BxMxV = np.asarray(jax.random.gumbel(jax.random.split(key, 3)[1], gen_BxMxV.shape))
    sampled_BxM = np.argmax(gen_BxMxV / 2.0 + noise_BxMxV, -1)
    original, corrupted = batch["input_ids"].copy(), batch["input_ids"].copy()
    for b in range(ROWS):
        for m in range(SLOTS):
            if w_BxM[b, m]:
                original[b, pos_BxM[b, m]] = lab_BxM[b, m]
                corrupted[b, pos_BxM[b, m]] = sampled_BxM[b, m]
    real = batch["attention_mask"] > 0
    replaced = (corrupted != original) & real
    x = np.asarray(
        nnx.jit(lambda m, *args: m.discriminator_logits(*args))(model, corrupted,
                                                                batch["attention_mask"],
                                                                batch["token_type_ids"]),
        np.float64)
    p = 1 / (1 + np.exp(-x))
    bce = -(replaced * np.log(p) + (~replaced) * np.log(1 - p))
    disc_loss = bce[real].mean()
    assert replaced.sum() > 0
    assert float(loss) == pytest.approx(gen_loss + 50.0 * disc_loss, rel=1e-5)
    assert metrics["generator_loss"] == pytest.approx(gen_loss, rel=1e-5)
    assert metrics["discriminator_loss"] == pytest.approx(disc_loss, rel=1e-5)
    predicted = (x > 0) & real
    assert metrics["discriminator_accuracy"] == pytest.approx(((x > 0) == replaced)[real].mean())
    assert metrics["replaced_recall"] == pytest.approx(
        (predicted & replaced).sum() / replaced.sum())
    assert metrics["replaced_rate"] == pytest.approx(replaced.sum() / real.sum())
    # The generator at slots shown as [MASK] and at slots kept as themselves; the samples.
    used = w_BxM > 0
    seen_BxM = np.take_along_axis(batch["input_ids"], pos_BxM, 1)
    right_BxM = gen_BxMxV.argmax(-1) == lab_BxM
    masked, kept = used & (seen_BxM != lab_BxM), used & (seen_BxM == lab_BxM)
    assert masked.sum() > 0 and kept.sum() > 0
    assert metrics["generator_accuracy_masked"] == pytest.approx(right_BxM[masked].mean())
    assert metrics["generator_accuracy_kept"] == pytest.approx(right_BxM[kept].mean())
    assert metrics["sampled_accuracy"] == pytest.approx((sampled_BxM == lab_BxM)[used].mean())


def test_replaced_means_sampled_differs_from_the_original():
    objective = Electra()
    model = model_for(objective)
    # A generator that always proposes token 7: its output bias dwarfs every logit.
    model.generator_head.bias[...] = model.generator_head.bias[...].at[7].set(1e4)
    batch = electra_batch(np.random.default_rng(2))
    batch["masked_labels"][:, 0] = np.where(batch["masked_weights"][:, 0] > 0, 7, 0)
    original = batch["input_ids"].copy()
    for b, m in zip(*np.nonzero(batch["masked_weights"])):
        original[b, batch["masked_positions"][b, m]] = batch["masked_labels"][b, m]
    outputs = nnx.jit(lambda m, b: objective.eval_outputs(m, b, dtype=jnp.float32))(model, batch)

    expected = np.zeros_like(original, bool)
    for b, m in zip(*np.nonzero(batch["masked_weights"])):
        expected[b, batch["masked_positions"][b, m]] = batch["masked_labels"][b, m] != 7
    # Slots whose original is 7 are "original" although masked; unused slots (position 0, the CLS
    # token), padding and unmasked tokens never count as replaced.
    np.testing.assert_array_equal(np.asarray(outputs["replaced_BxL"]) > 0, expected)
    assert (batch["masked_weights"][:, 0] > 0).sum() > 0 and (batch["masked_weights"] == 0).any()


def test_one_embedding_table_trained_by_both_losses():
    model = model_for(Electra())
    names = param_names(model)
    tables = [
        n for n, x in flat_names(nnx.to_pure_dict(nnx.state(model, nnx.Param))).items()
        if x.shape == (CONFIG.vocab_size, CONFIG.embedding_dim)
    ]
    assert tables == ["embeddings/word/embedding"]
    assert not [
        n for n in names
        if "embeddings/" in n and not n.startswith("embeddings/") and "embeddings_project" not in n
    ]
    batch = electra_batch(np.random.default_rng(3))
    graphdef, params = nnx.split(model, nnx.Param)

    objectives = [
        Electra(ElectraConfig(generator_weight=g, discriminator_weight=d))
        for g, d in ((1.0, 0.0), (0.0, 50.0))
    ]

    @jax.jit
    def grads(params):
        def loss(p, objective):
            return objective.loss(nnx.merge(graphdef, p), batch, objective.normalizers(batch),
                                  dtype=jnp.float32, dropout_key=jax.random.key(5))[0]

        return [jax.grad(lambda p, o=o: loss(p, o))(params) for o in objectives]

    generator_only, discriminator_only = (flat_names(nnx.to_pure_dict(g)) for g in grads(params))
    table = "embeddings/word/embedding"
    assert np.abs(generator_only[table]).sum() > 0 and np.abs(discriminator_only[table]).sum() > 0
    # No gradient crosses the sampling: the discriminator loss leaves the generator untouched,
    # and the generator loss never reaches the discriminator.
    for name, g in discriminator_only.items():
        if name.startswith("generator"):
            assert not np.any(g), name
    for name, g in generator_only.items():
        if name.startswith("discriminator"):
            assert not np.any(g), name


def test_gumbel_sampling_follows_the_softmax_and_auc_counts_pairs():
    logits_V = jnp.array([2.0, 1.0, 0.0, -1.0, 0.5])
    draws = 40_000
    for temperature in (1.0, 2.0):
        sampled = np.asarray(
            sample_tokens(jnp.broadcast_to(logits_V, (draws, 1, 5)),
                          jax.random.key(int(temperature)), temperature))
        p = np.asarray(jax.nn.softmax(logits_V / temperature))
        freq = np.bincount(sampled.ravel(), minlength=5) / draws
        np.testing.assert_array_less(np.abs(freq - p), 4.5 * np.sqrt(p * (1 - p) / draws))

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 300).astype(float)  # many ties
    positive = rng.random(300) < 0.3
    pairs = scores[positive][:, None] - scores[~positive][None, :]
    brute = (np.sum(pairs > 0) + 0.5 * np.sum(pairs == 0)) / pairs.size
    assert roc_auc(scores, positive) == pytest.approx(brute, rel=1e-12)


def _run(program, batches):
    state = program.init_state(jax.random.key_data(jax.random.key(0)))
    logged = []
    for batch in batches:
        state, metrics = program.train_step(state, host_batch_to_global(program.mesh, batch))
        logged.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return jax.device_get(state["params"]), logged


def test_accumulation_equals_one_big_batch():
    # Near-zero temperature makes sampling an argmax, so the samples do not depend on the
    # micro-batch's key and both runs see the same corrupted inputs.
    objective = Electra(ElectraConfig(temperature=1e-6))
    optim = OptimConfig(learning_rate=1e-3, total_steps=10)
    mesh = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    rng = np.random.default_rng(4)
    batches = [electra_batch(rng, rows=16) for _ in range(2)]
    micro = [{k: v[i::4] for k, v in batches[0].items()} for i in range(4)]
    assert len({float(m["masked_weights"].sum()) for m in micro}) > 1  # counts differ by part

    def program(accum):
        return TrainProgram(objective, CONFIG, make_optimizer(optim), learning_rate_schedule(optim),
                            mesh, StepConfig(grad_accum_steps=accum))

    big_params, big = _run(program(1), batches)
    acc_params, acc = _run(program(4), batches)
    keys = ("loss", "generator_loss", "discriminator_loss", "discriminator_accuracy",
            "replaced_rate", "grad_norm")
    for step_big, step_acc in zip(big, acc):
        np.testing.assert_allclose([step_acc[k] for k in keys], [step_big[k] for k in keys],
                                   rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=2e-6), acc_params,
                 big_params)


def _discriminator_params(config) -> int:
    """Parameters of the discriminator without its head (transformers' ElectraModel)."""
    model = nnx.eval_shape(lambda: ElectraPreTrainingModel(config, rngs=nnx.Rngs(0)))
    params = flat_names(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return sum(x.size for n, x in params.items() if n.startswith(("embeddings/", "discriminator/")))


def test_selectra_configs():
    for name, expected, generator_hidden in (("selectra_small", 22.4e6, 64), ("selectra_medium",
                                                                              40.7e6, 96)):
        _check_selectra(name, expected, generator_hidden)


def _check_selectra(name, expected, generator_hidden):
    config = run_config.load(os.path.join(REPO, "configs", f"{name}.py"))
    model = config.model(50_000, 0)
    assert (model.vocab_size, model.num_layers, model.embedding_dim) == (50_000, 12,
                                                                         model.hidden_size)
    body = _discriminator_params(model)
    assert abs(body / expected - 1) < 0.01, (name, body)
    objective = Electra(ElectraConfig(**config.objective_sections["electra"]))
    generator = objective.generator_config(model)
    assert (generator.hidden_size, generator.num_layers, generator.intermediate_size,
            generator.num_heads) == (generator_hidden, 12, 4 * generator_hidden, 1)
    assert (config.loop.batch_size, config.data.seq_len, config.loop.steps) == (128, 512, 300_000)
    lr = learning_rate_schedule(config.optim)
    for step, want in ((5_000, 2.5e-4), (10_000, 5e-4), (80_000, 2.5e-4), (150_000, 0.0),
                       (155_000, 2.5e-4), (160_000, 5e-4), (230_000, 2.5e-4), (300_000, 0.0)):
        assert float(lr(step)) == pytest.approx(want, abs=1e-9), (name, step)
    assert float(lr(149_999)) < 1e-8  # decayed to 0 just before the restart
    # MFU counts both towers: a wider generator costs more per token.
    counts = {"tokens": 1000.0, "predictions": 150.0}
    wider = Electra(dataclasses.replace(objective.config, generator_hidden_fraction=0.5))
    assert wider.train_flops(model, 512, counts) > objective.train_flops(model, 512, counts)


@pytest.mark.slow
def test_electra_tiny_trains_from_the_command_line(tmp_path):
    """configs/electra_tiny.py end to end (a few steps): a cased, accent-keeping Spanish
    WordPiece, ELECTRA metrics and the host-side AUC in metrics.jsonl."""
    workdir = tmp_path / "run"
    subprocess.run([
        sys.executable, "-m", "flaxlm.cli", "train", "--config",
        os.path.join(REPO, "configs", "electra_tiny.py"), "--workdir",
        str(workdir), "--config.train.steps=4", "--config.train.log_every=2",
        "--config.train.eval_every=4", "--config.train.batch_size=8"
    ], check=True, cwd=REPO, env=dict(os.environ, XLA_FLAGS=""))
    meta = json.loads((workdir / "tokenizer" / "flaxlm_tokenizer.json").read_text())
    assert (meta["kind"], meta["lowercase"], meta["strip_accents"]) == ("wordpiece", False, False)
    vocab = (workdir / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert any(ch in token for token in vocab for ch in "áéíóúñ")
    assert any(token[:1].isupper() for token in vocab)
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = [line for line in lines if "eval_replaced_auc" in line][-1]
    assert 0.0 <= last["eval_replaced_auc"] <= 1.0 and last["eval_masked_tokens"] > 0

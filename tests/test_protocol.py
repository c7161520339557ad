"""Each seam of the objective protocol (issue 13), shown on a toy objective written here.

The toy model is small but shaped like the real ones: every parameter carries logical axes (so it
shards), an `encoder` with a tied embedding and a list of layers, a token `head`, and a `teacher`
block that the objective freezes. Its loss has two terms over different counts: cross-entropy at
masked slots + 50 × a per-token term (the head's cross-entropy plus the distance to the teacher's
features), the shape of ELECTRA's generator + discriminator loss.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from flaxlm import partial_init, run_config
from flaxlm.errors import FlaxlmError
from flaxlm.metrics_log import read_metrics
from flaxlm.models.config import preset
from flaxlm.models.heads import gather_positions
from flaxlm.models.layers import DenseGeneral, Embed
from flaxlm.objectives import registry
from flaxlm.objectives.base import EvalSelection, InitRule, ObjectiveDefaults
from flaxlm.objectives.mlm import masked_xent_sums
from flaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer
from flaxlm.sharding import MeshConfig, host_batch_to_global, make_mesh, named_sharding
from flaxlm.steps import StepConfig, TrainProgram, flat_axes, flat_names
from flaxlm.train import train
from tests.conftest import IT_EVAL, IT_TRAIN

CONFIG = preset("tiny", hidden_dropout=0.0, attention_dropout=0.0)  # D=64, F=128, 2 layers
ROWS, LENGTH, SLOTS = 16, 16, 6
TOKEN_WEIGHT = 50.0


# -- the toy model -------------------------------------------------------------------------------
class Block(nnx.Module):
    def __init__(self, d: int, f: int, *, rngs: nnx.Rngs):
        self.up = DenseGeneral((d,), (f,), ("embed",), ("mlp",), rngs=rngs)
        self.down = DenseGeneral((f,), (d,), ("mlp",), ("embed",), rngs=rngs)

    def __call__(self, x_BxLxD):
        return x_BxLxD + self.down(jnp.tanh(self.up(x_BxLxD)))


class ToyEncoder(nnx.Module):
    def __init__(self, config, *, rngs: nnx.Rngs):
        self.embed = Embed(config.vocab_size, config.hidden_size, ("vocab", "embed"), rngs=rngs)
        self.layers = nnx.List([Block(config.hidden_size, config.intermediate_size, rngs=rngs)
                                for _ in range(config.num_layers)])

    def __call__(self, e_BxLxD):
        for layer in self.layers:
            e_BxLxD = layer(e_BxLxD)
        return e_BxLxD


class ToyModel(nnx.Module):
    def __init__(self, config, *, rngs: nnx.Rngs):
        self.encoder = ToyEncoder(config, rngs=rngs)
        self.head = DenseGeneral((config.hidden_size,), (2,), ("embed",), ("labels",), rngs=rngs)
        self.teacher = Block(config.hidden_size, config.intermediate_size, rngs=rngs)


# -- the toy objective ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ToyConfig:
    freeze_teacher: bool = True
    fresh_head: bool = False  # with init_from: load the encoder only
    teacher_from: str = ""  # a workdir whose encoder layer 0 becomes the teacher
    layer_decay: float = 1.0


def token_labels(input_ids_BxL):
    return input_ids_BxL % 2  # learnable from the embeddings alone


def toy_batch(rng: np.random.Generator, rows: int, length: int, vocab: int) -> dict:
    """Rows of different real lengths and prediction counts, so micro-batch counts differ."""
    lengths_B = rng.integers(4, length + 1, rows)
    mask_BxL = np.arange(length) < lengths_B[:, None]
    ids_BxL = np.where(mask_BxL, rng.integers(5, vocab, (rows, length)), 1)
    return {"input_ids": ids_BxL.astype(np.int32), "attention_mask": mask_BxL.astype(np.int32),
            "masked_positions": rng.integers(0, lengths_B[:, None], (rows, SLOTS)).astype(np.int32),
            "masked_labels": rng.integers(5, vocab, (rows, SLOTS)).astype(np.int32),
            "masked_weights": (rng.random((rows, SLOTS)) < 0.7).astype(np.float32)}


class Toy(ObjectiveDefaults):
    name = "toy"
    head = "token_classification"  # what config.json records; the toy is never exported
    Config = ToyConfig
    selection = EvalSelection("f1", "max")
    summary_keys = ("loss", "slot_loss", "token_loss")

    def __init__(self, config: ToyConfig | None = None):
        self.config = config or ToyConfig()
        self.frozen = (nnx.PathContains("teacher") if self.config.freeze_teacher
                       else nnx.Nothing())

    def build_model(self, config, rngs):
        return ToyModel(config, rngs=rngs)

    def weight_sources(self):
        return {"teacher": self.config.teacher_from} if self.config.teacher_from else {}

    def init_rules(self, has_init_from):
        rules = []
        if has_init_from:
            rules.append(InitRule("encoder") if self.config.fresh_head else InitRule(""))
        if self.config.teacher_from:
            rules.append(InitRule("teacher", "teacher", "encoder/layers/0"))
        return tuple(rules)

    def lr_scales(self, config, param_paths):
        # Layer-wise decay: the head trains at the full rate, layer i at decay^(L-i), the
        # embeddings at decay^(L+1).
        if self.config.layer_decay == 1.0:
            return None
        depth = {"encoder/embed/": config.num_layers + 1, **{
            f"encoder/layers/{i}/": config.num_layers - i for i in range(config.num_layers)}}
        return {name: self.config.layer_decay ** d for name in param_paths
                for prefix, d in depth.items() if name.startswith(prefix)}

    # -- data ----------------------------------------------------------------------------------
    def train_batches(self, ctx, start_example):
        rng = np.random.default_rng([ctx.seed, ctx.process_index, start_example])
        while True:
            yield toy_batch(rng, ctx.host_batch_size, ctx.data.seq_len, ctx.tokenizer.vocab_size)

    def eval_batches(self, ctx):
        rng = np.random.default_rng([ctx.seed, ctx.process_index, 999])
        return [toy_batch(rng, ctx.host_batch_size, ctx.data.seq_len, ctx.tokenizer.vocab_size)
                for _ in range(2)]

    def batch_spec(self, global_batch, data):
        rows, slots = (global_batch, data.seq_len), (global_batch, SLOTS)
        return {"input_ids": jax.ShapeDtypeStruct(rows, jnp.int32),
                "attention_mask": jax.ShapeDtypeStruct(rows, jnp.int32),
                "masked_positions": jax.ShapeDtypeStruct(slots, jnp.int32),
                "masked_labels": jax.ShapeDtypeStruct(slots, jnp.int32),
                "masked_weights": jax.ShapeDtypeStruct(slots, jnp.float32)}

    def real_counts(self, host_batch):
        return {"tokens": float(np.count_nonzero(host_batch["attention_mask"])),
                "slots": float(np.count_nonzero(host_batch["masked_weights"]))}

    # -- loss ----------------------------------------------------------------------------------
    def normalizers(self, batch):
        return {"slots": jnp.maximum(jnp.sum(batch["masked_weights"]), 1.0),
                "tokens": jnp.maximum(jnp.sum(batch["attention_mask"].astype(jnp.float32)), 1.0)}

    def loss(self, model, batch, normalizers, *, dtype, dropout_key):
        del dropout_key  # the toy has no dropout
        mask_BxL = batch["attention_mask"].astype(jnp.float32)
        e_BxLxD = model.encoder.embed(batch["input_ids"], dtype)
        x_BxLxD = model.encoder(e_BxLxD)
        logits_BxMxV = model.encoder.embed.attend(
            gather_positions(x_BxLxD, batch["masked_positions"]))
        slot_sum, _ = masked_xent_sums(logits_BxMxV, batch["masked_labels"],
                                       batch["masked_weights"])
        logits_BxLx2 = model.head(x_BxLxD).astype(jnp.float32)
        label_BxL = jnp.take_along_axis(
            logits_BxLx2, token_labels(batch["input_ids"])[..., None], axis=-1)[..., 0]
        head_xent_BxL = jax.nn.logsumexp(logits_BxLx2, axis=-1) - label_BxL
        # The frozen teacher's features of the same embeddings are a distillation target.
        target_BxLxD = jax.lax.stop_gradient(model.teacher(e_BxLxD))
        distance_BxL = jnp.mean(jnp.square(x_BxLxD - target_BxLxD), axis=-1)
        token_sum = jnp.sum((head_xent_BxL + distance_BxL) * mask_BxL)
        loss = slot_sum / normalizers["slots"] + TOKEN_WEIGHT * token_sum / normalizers["tokens"]
        return loss, {"slot_sum": slot_sum, "token_sum": token_sum,
                      "slots": jnp.sum(batch["masked_weights"]), "tokens": jnp.sum(mask_BxL)}

    def metrics(self, sums):
        slot_loss = sums["slot_sum"] / jnp.maximum(sums["slots"], 1.0)
        token_loss = sums["token_sum"] / jnp.maximum(sums["tokens"], 1.0)
        return {"loss": slot_loss + TOKEN_WEIGHT * token_loss, "slot_loss": slot_loss,
                "token_loss": token_loss, "slots": sums["slots"], "tokens": sums["tokens"]}

    # -- evaluation: token predictions, reduced to F1 on the host --------------------------------
    def eval_outputs(self, model, batch, *, dtype):
        x_BxLxD = model.encoder(model.encoder.embed(batch["input_ids"], dtype))
        return {"predictions": jnp.argmax(model.head(x_BxLxD), axis=-1).astype(jnp.int32)}

    def eval_metrics(self, outputs, batches):
        real = np.concatenate([b["attention_mask"].ravel() > 0 for b in batches])
        gold = np.concatenate([token_labels(b["input_ids"]).ravel() for b in batches])[real]
        pred = np.concatenate([o["predictions"].ravel() for o in outputs])[real]
        tp, fp_fn = np.sum((pred == 1) & (gold == 1)), np.sum(pred != gold)
        return {"f1": float(2 * tp / max(2 * tp + fp_fn, 1)), "accuracy": float(np.mean(pred == gold))}

    def train_flops(self, config, seq_len, counts):
        d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
        per_token = 6 * config.num_layers * 2 * d * f + 6 * 2 * d + 2 * 2 * d * f  # + teacher fwd
        return per_token * counts["tokens"] + 6 * d * v * counts["slots"]


# -- helpers -------------------------------------------------------------------------------------
def _program(objective, mesh_shape, accum=1, optimizer=None, config=CONFIG):
    optim = OptimConfig(learning_rate=1e-3, warmup_steps=0, total_steps=10)
    mesh = make_mesh(MeshConfig(*mesh_shape), jax.devices()[:int(np.prod(mesh_shape))])
    return TrainProgram(objective, config, optimizer or make_optimizer(optim),
                        learning_rate_schedule(optim), mesh, StepConfig(grad_accum_steps=accum))


def _key(seed=0):
    return jax.random.key_data(jax.random.key(seed))


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [toy_batch(rng, ROWS, LENGTH, CONFIG.vocab_size) for _ in range(n)]


def _train_steps(program, steps=2):
    """Train `steps` steps from a fresh state; also returns host copies of what it started from."""
    state = program.init_state(_key())
    before = {"params": jax.device_get(state["params"]), "frozen": program.frozen,
              "frozen_values": jax.device_get(program.frozen)}
    logged = []
    for batch in _batches(steps):
        state, metrics = program.train_step(state, host_batch_to_global(program.mesh, batch))
        logged.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return state, logged, before


# -- a. exact multi-term losses ------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_batch_run():
    """Two steps on whole batches on a (2, 2, 2) mesh, and what the state was before them."""
    program = _program(Toy(), (2, 2, 2))
    state, logged, before = _train_steps(program)
    return program, before, state, logged


def test_two_terms_over_different_counts_accumulate_exactly(big_batch_run):
    program, before, big_state, big = big_batch_run
    acc_state, acc, _ = _train_steps(_program(Toy(), (2, 2, 2), accum=4))
    keys = ("loss", "slot_loss", "token_loss", "slots", "tokens", "grad_norm")
    for step_big, step_acc in zip(big, acc):
        np.testing.assert_allclose([step_acc[k] for k in keys], [step_big[k] for k in keys],
                                   rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
                 jax.device_get(acc_state["params"]), jax.device_get(big_state["params"]))

    # Why the counts come from the whole batch: the micro-batches (row r in micro-batch r % 4, as
    # the step splits them) hold different counts, so dividing each by its own counts and
    # averaging (the mean of micro-batch means) is another loss, with another gradient.
    objective = program.objective
    batch = _batches(1)[0]
    micro = [{k: v[i::4] for k, v in batch.items()} for i in range(4)]
    assert len({float(objective.normalizers(m)["tokens"]) for m in micro}) > 1

    @jax.jit
    def grad_norms(params, frozen, batch, micro):
        def grad_norm(batches, normalizers_of):
            def loss(p):
                model = program.model(p, frozen)
                return sum(objective.loss(model, b, normalizers_of(b), dtype=jnp.float32,
                                          dropout_key=None)[0] for b in batches)
            return optax.global_norm(jax.grad(loss)(params))
        whole = objective.normalizers(batch)
        own = lambda b: {k: 4 * n for k, n in objective.normalizers(b).items()}  # noqa: E731
        return (grad_norm([batch], lambda _: whole), grad_norm(micro, lambda _: whole),
                grad_norm(micro, own))
    exact, accumulated, mean_of_means = map(float, grad_norms(
        before["params"], before["frozen_values"], batch, micro))
    assert accumulated == pytest.approx(exact, rel=1e-6)
    assert abs(mean_of_means / exact - 1) > 1e-2


# -- b. frozen state -----------------------------------------------------------------------------
def test_frozen_teacher_is_sharded_untouched_and_used(big_batch_run):
    program, before, state, _ = big_batch_run
    frozen = program.frozen
    assert sorted(flat_names(frozen)) == ["teacher/down/bias", "teacher/down/kernel",
                                          "teacher/up/bias", "teacher/up/kernel"]
    # Not trained: no parameter, no optimizer state, hence no gradient (the optimizer's moments
    # are the gradient's pytree).
    assert "teacher" not in state["params"]
    assert not any("teacher" in name for name in flat_names(state["opt_state"]))
    # Sharded by the same logical-axis rules as parameters.
    axes = flat_axes(program.frozen_axes)
    for path, leaf in jax.tree_util.tree_flatten_with_path(frozen)[0]:
        keys = tuple(k.key for k in path)
        assert leaf.sharding == named_sharding(program.mesh, axes[keys], leaf.shape), keys
    up = frozen["teacher"]["up"]["kernel"]
    assert up.sharding.spec == P("fsdp", "tensor")
    assert {s.data.shape for s in up.addressable_shards} == {(32, 64)}

    # Two steps later (the fixture's): the same arrays, not donated, bitwise unchanged, while
    # every parameter moved.
    assert frozen is before["frozen"] and not up.is_deleted()
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(frozen), before["frozen_values"])
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                           jax.device_get(state["params"]), before["params"])
    assert all(jax.tree.leaves(changed))

    # Used in the loss: another teacher gives another loss for the same parameters and batch.
    objective = program.objective
    batch = host_batch_to_global(program.mesh, _batches(1, seed=5)[0])

    @jax.jit
    def loss_with(params, teacher, batch):
        loss, _ = objective.loss(program.model(params, teacher), batch,
                                 objective.normalizers(batch), dtype=jnp.float32,
                                 dropout_key=None)
        return loss
    other = jax.tree.map(lambda x: x + 1.0, frozen)
    assert abs(float(loss_with(state["params"], other, batch))
               - float(loss_with(state["params"], frozen, batch))) > 1.0


# -- c. partial initialization -------------------------------------------------------------------
def _source_weights(config, seed):
    """Random weights named and shaped like a toy model's: what a source workdir holds."""
    abstract = nnx.eval_shape(lambda: ToyModel(config, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(x.shape).astype(np.float32) for name, x in
            flat_names(nnx.to_pure_dict(nnx.state(abstract, nnx.Param))).items()}


@pytest.fixture(scope="module")
def fsdp_program():
    return _program(Toy(), (1, 4, 2))


def test_init_rules_load_subtrees_and_list_the_rest_as_fresh(fsdp_program):
    program = fsdp_program
    state = program.init_state(_key())
    targets = {**flat_names(state["params"]), **flat_names(program.frozen)}
    sources = {"pre": _source_weights(CONFIG, 1),
               "teacher": _source_weights(dataclasses.replace(CONFIG, num_layers=3), 2)}
    rules = (InitRule("encoder", "pre"),  # the encoder from a pre-training run; the head fresh
             InitRule("encoder/layers/1", "teacher", "encoder/layers/2"),  # layer i ← layer j
             InitRule("teacher", "teacher", "encoder/layers/0"))  # the frozen block
    plan = partial_init.plan(rules, {n: v.shape for n, v in targets.items()},
                             {s: {n: v.shape for n, v in t.items()} for s, t in sources.items()})

    assert set(plan.loaded) | set(plan.fresh) == set(targets)
    assert not set(plan.loaded) & set(plan.fresh)
    assert plan.fresh == ["head/bias", "head/kernel"]
    assert plan.loaded["encoder/layers/0/up/kernel"] == ("pre", "encoder/layers/0/up/kernel")
    assert plan.loaded["encoder/layers/1/up/kernel"] == ("teacher", "encoder/layers/2/up/kernel")
    assert plan.loaded["teacher/down/bias"] == ("teacher", "encoder/layers/0/down/bias")
    assert plan.summary({"pre": "p", "teacher": "t"}) == (
        "weights: 5 tensors from pre (p); 8 tensors from teacher (t); "
        "fresh: head/bias, head/kernel")

    params = partial_init.apply(plan, state["params"], sources, program.state_shardings["params"])
    teacher = partial_init.apply(plan, program.frozen, sources, program.frozen_shardings)
    loaded, fresh = flat_names(params), flat_names(state["params"])
    for name, (source, source_name) in plan.loaded.items():
        value = loaded.get(name, flat_names(teacher).get(name))
        np.testing.assert_array_equal(value, sources[source][source_name])
    for name in plan.fresh:
        np.testing.assert_array_equal(loaded[name], fresh[name])
    placement = flat_names(program.state_shardings["params"])
    for name, x in loaded.items():
        assert x.sharding == placement[name], name

    narrow = {"wide": _source_weights(dataclasses.replace(CONFIG, intermediate_size=32), 3)}
    with pytest.raises(FlaxlmError, match=re.escape(
            "wide tensor encoder/layers/1/down/kernel has shape (32, 64), but "
            "encoder/layers/0/down/kernel needs (128, 64)")):
        partial_init.plan((InitRule("encoder/layers/0", "wide", "encoder/layers/1"),),
                          {n: v.shape for n, v in targets.items()},
                          {s: {n: v.shape for n, v in t.items()} for s, t in narrow.items()})


# -- d. per-leaf learning-rate scales ------------------------------------------------------------
def test_layer_decay_keeps_moments_sharded_and_scales_updates(fsdp_program):
    decayed, plain = _program(Toy(ToyConfig(layer_decay=0.5)), (1, 4, 2)), fsdp_program
    state = decayed.init_state(_key())
    params = flat_names(state["params"])
    moments = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]:
        if leaf.ndim:
            name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
            assert leaf.sharding == params[name].sharding, name
            moments += 1
    assert moments == 2 * len(params)  # Adam's mu and nu, one each per parameter
    assert params["encoder/embed/embedding"].sharding.spec == P("tensor", "fsdp")

    batch = _batches(1)[0]
    before = {k: np.asarray(v) for k, v in flat_names(jax.device_get(state["params"])).items()}
    after_decayed = flat_names(jax.device_get(
        decayed.train_step(state, host_batch_to_global(decayed.mesh, batch))[0]["params"]))
    after_plain = flat_names(jax.device_get(plain.train_step(
        plain.init_state(_key()), host_batch_to_global(plain.mesh, batch))[0]["params"]))
    scales = {"encoder/embed/": 0.125, "encoder/layers/0/": 0.25, "encoder/layers/1/": 0.5,
              "head/": 1.0}
    for name, p in before.items():
        scale = next(s for prefix, s in scales.items() if name.startswith(prefix))
        step_plain = after_plain[name] - p
        # Power-of-two scales are exact; each side rounds once when added to the parameter.
        ulp = np.spacing(np.float32(np.abs(p).max() + np.abs(step_plain).max()))
        np.testing.assert_allclose(after_decayed[name] - p, scale * step_plain, rtol=0,
                                   atol=ulp, err_msg=name)
        assert np.abs(step_plain).max() > 100 * ulp, name  # the step itself is not rounding


def test_multi_transform_is_refused_by_the_strict_sharding_check():
    def groups(params):
        return {k: jax.tree.map(lambda _: "head" if k == "head" else "body", v)
                for k, v in params.items()}
    optimizer = optax.multi_transform({"body": optax.adamw(1e-3), "head": optax.adamw(1e-2)},
                                      groups)
    with pytest.raises(FlaxlmError, match=r"train-state leaf opt_state/\S+ .* matches no "
                                          r"parameter.*multi_transform"):
        _program(Toy(), (1, 4, 2), optimizer=optimizer)


# -- e. host-side eval metric and best-checkpoint selection, end to end through train() ----------
def _toy_run_config(tokenizer, steps, **toy):
    c = run_config.base_config()
    c.objective.name = "toy"
    c.objective.toy.update(toy)
    c.data.tokenizer, c.data.seq_len = tokenizer, LENGTH
    c.data.train_files, c.data.eval_files = IT_TRAIN, IT_EVAL  # the toy makes its own batches
    # A learning rate high enough that F1 peaks early (predictions collapse to one class).
    c.train.update(steps=steps, batch_size=8, learning_rate=3e-2, warmup_steps=0, log_every=2,
                   eval_every=2, checkpoint_every=2, keep_checkpoints=1)
    c.lock()
    return run_config.resolve(c)


@pytest.fixture(scope="module")
def toy_registered():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.OBJECTIVES, "toy", Toy)
        yield


@pytest.fixture(scope="module")
def toy_run(toy_registered, tiny_tokenizer_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy_run")
    train(_toy_run_config(tiny_tokenizer_dir, 6), str(workdir), progress=False)
    return workdir


def test_host_side_metric_selects_the_best_checkpoint(toy_run):
    evals = [m for m in read_metrics(str(toy_run)) if "eval_f1" in m]
    assert [m["step"] for m in evals] == [2, 4, 6]
    assert all("eval_loss" not in m for m in evals)  # the toy's own metrics, nothing MLM-shaped
    f1 = [m["eval_f1"] for m in evals]
    best_step = evals[int(np.argmax(f1))]["step"]  # argmax: the first of equal values, as "max"
    assert json.loads((toy_run / "best.json").read_text()) == {
        "step": best_step, "metric": "f1", "mode": "max", "value": max(f1)}
    # keep_checkpoints=1 keeps the newest, and the best beside it.
    assert best_step < 6
    assert sorted(os.listdir(toy_run / "checkpoints")) == sorted([str(best_step), "6"])
    running_best = np.maximum.accumulate(f1)
    improved = [m["step"] for i, m in enumerate(evals) if i == 0 or f1[i] > running_best[i - 1]]
    assert [m["step"] for m in evals if "best_eval_f1" in m] == improved
    assert all(m["best_eval_f1"] == running_best[i] for i, m in enumerate(evals)
               if "best_eval_f1" in m)
    train_lines = [m for m in read_metrics(str(toy_run)) if "loss" in m]
    assert {"slot_loss", "token_loss", "slots_per_sec", "mfu"} <= set(train_lines[-1])


def test_init_from_loads_the_encoder_and_a_frozen_teacher_from_a_workdir(
        toy_run, tiny_tokenizer_dir, tmp_path, capsys):
    config = _toy_run_config(tiny_tokenizer_dir, 1, fresh_head=True, teacher_from=str(toy_run))
    config = dataclasses.replace(config, init_from=str(toy_run))
    train(config, str(tmp_path), progress=False)
    source = f"{toy_run}, step 6"
    assert (f"flaxlm: weights: 9 tensors from init_from ({source}); 4 tensors from teacher "
            f"({source}); fresh: head/bias, head/kernel; ") in capsys.readouterr().out
    # Resuming restores the trainable state from the checkpoint and re-reads the frozen teacher.
    train(dataclasses.replace(config, loop=dataclasses.replace(config.loop, steps=2)),
          str(tmp_path), progress=False)
    assert re.search(r"resumed from checkpoint 1; frozen weights: 4 tensors from teacher "
                     r"\(.*, step 6\); fresh: none;", capsys.readouterr().out)


# -- host-side metrics with several processes ----------------------------------------------------
_EVAL_SCRIPT = """
import json, sys
import numpy as np
from flaxlm import distributed
coordinator, processes, index = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if processes > 1:
    distributed.initialize(coordinator, processes, index)
import jax
from flaxlm.train import evaluate
from tests import test_protocol as t
program = t._program(t.Toy(), (4, 1, 1))
state = program.init_state(t._key())
# Process p holds rows [8p, 8p + 8) of each global batch: exactly the order of the global rows.
batches = [{k: np.split(v, processes)[index] for k, v in b.items()} for b in t._batches(2)]
print("METRICS " + json.dumps(evaluate(program, state["params"], program.mesh, batches)))
"""


@pytest.mark.slow
def test_host_side_metrics_see_every_process_rows(tmp_path):
    """Two processes × 2 devices evaluate the same global batches as one process × 4 devices."""
    from launch.local import free_port, process_env
    from tests.conftest import REPO

    def start(processes, devices, index, coordinator):
        return subprocess.Popen(
            [sys.executable, "-c", _EVAL_SCRIPT, coordinator, str(processes), str(index)],
            cwd=REPO, env=process_env(devices), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
    coordinator = f"localhost:{free_port()}"
    runs = [start(1, 4, 0, ""), start(2, 2, 0, coordinator), start(2, 2, 1, coordinator)]
    results = []
    for run in runs:
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0, out[-3000:]
        results.append(json.loads(re.search(r"^METRICS (.*)$", out, re.M).group(1)))
    assert results[0]["eval_f1"] > 0
    assert results[1] == results[0] and results[2] == results[0]

"""Each seam of the objective protocol (issue 13), shown on the toy objective in
tests/toy_objective.py: exact accumulation of a two-term loss, a frozen teacher, partial
initialization, per-leaf learning-rate scales, and a host-side metric that selects the best
checkpoint, end to end through `train()`.
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

from flaxlm import run_config
from flaxlm.errors import FlaxlmError
from flaxlm.models.param_tree import flat_names
from flaxlm.objectives import registry
from flaxlm.run import weights
from flaxlm.run.protocol import InitRule
from flaxlm.run.steps import axes_by_name
from flaxlm.run.workdir import Workdir
from flaxlm.sharding import host_batch_to_global, named_sharding
from flaxlm.train import train
from tests.conftest import IT_EVAL, IT_TRAIN, REPO
from tests.toy_objective import (CONFIG, LENGTH, Toy, ToyConfig, ToyModel, key, toy_batches,
                                 toy_program)


def _train_steps(program, steps=2):
    """Train `steps` steps from a fresh state; also returns host copies of what it started from."""
    state = program.init_state(key())
    before = {
        "params": jax.device_get(state["params"]),
        "frozen": program.frozen,
        "frozen_values": jax.device_get(program.frozen)
    }
    logged = []
    for batch in toy_batches(steps):
        state, metrics = program.train_step(state, host_batch_to_global(program.mesh, batch))
        logged.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return state, logged, before


# -- a. exact multi-term losses ------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_batch_run():
    """Two steps on whole batches on a (2, 2, 2) mesh, and what the state was before them."""
    program = toy_program(Toy(), (2, 2, 2))
    state, logged, before = _train_steps(program)
    return program, before, state, logged


def test_two_terms_over_different_counts_accumulate_exactly(big_batch_run):
    program, before, big_state, big = big_batch_run
    acc_state, acc, _ = _train_steps(toy_program(Toy(), (2, 2, 2), accum=4))
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
    batch = toy_batches(1)[0]
    micro = [{k: v[i::4] for k, v in batch.items()} for i in range(4)]
    assert len({float(objective.normalizers(m)["tokens"]) for m in micro}) > 1

    @jax.jit
    def grad_norms(params, frozen, batch, micro):
        def grad_norm(batches, normalizers_of):
            def loss(p):
                model = program.model(p, frozen)
                return sum(
                    objective.loss(model, b, normalizers_of(b), dtype=jnp.float32, dropout_key=None)
                    [0] for b in batches)

            return optax.global_norm(jax.grad(loss)(params))

        whole = objective.normalizers(batch)
        own = lambda b: {k: 4 * n for k, n in objective.normalizers(b).items()}  # noqa: E731
        return (grad_norm([batch],
                          lambda _: whole), grad_norm(micro,
                                                      lambda _: whole), grad_norm(micro, own))

    exact, accumulated, mean_of_means = map(
        float, grad_norms(before["params"], before["frozen_values"], batch, micro))
    assert accumulated == pytest.approx(exact, rel=1e-6)
    assert abs(mean_of_means / exact - 1) > 1e-2


# -- b. frozen state -----------------------------------------------------------------------------
def test_frozen_teacher_is_sharded_untouched_and_used(big_batch_run):
    program, before, state, _ = big_batch_run
    frozen = program.frozen
    assert sorted(flat_names(frozen)) == [
        "teacher/down/bias", "teacher/down/kernel", "teacher/up/bias", "teacher/up/kernel"
    ]
    # Not trained: no parameter, no optimizer state, hence no gradient (the optimizer's moments
    # are the gradient's pytree).
    assert "teacher" not in state["params"]
    assert not any("teacher" in name for name in flat_names(state["opt_state"]))
    # Sharded by the same logical-axis rules as parameters.
    axes = axes_by_name(program.frozen_axes)
    for name, leaf in flat_names(frozen).items():
        assert leaf.sharding == named_sharding(program.mesh, axes[name], leaf.shape), name
    up = frozen["teacher"]["up"]["kernel"]
    assert up.sharding.spec == P("fsdp", "tensor")
    assert {s.data.shape for s in up.addressable_shards} == {(32, 64)}

    # Two steps later (the fixture's): the same arrays, not donated, bitwise unchanged, while
    # every parameter moved.
    assert frozen is before["frozen"] and not up.is_deleted()
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(frozen), before["frozen_values"])
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(state["params"]),
                           before["params"])
    assert all(jax.tree.leaves(changed))

    # Used in the loss: another teacher gives another loss for the same parameters and batch.
    objective = program.objective
    batch = host_batch_to_global(program.mesh, toy_batches(1, seed=5)[0])

    @jax.jit
    def loss_with(params, teacher, batch):
        loss, _ = objective.loss(program.model(params, teacher), batch,
                                 objective.normalizers(batch), dtype=jnp.float32, dropout_key=None)
        return loss

    other = jax.tree.map(lambda x: x + 1.0, frozen)
    assert abs(
        float(loss_with(state["params"], other, batch)) -
        float(loss_with(state["params"], frozen, batch))) > 1.0


# -- c. partial initialization -------------------------------------------------------------------
def _source_weights(config, seed):
    """Random weights named and shaped like a toy model's: what a source workdir holds."""
    abstract = nnx.eval_shape(lambda: ToyModel(config, rngs=nnx.Rngs(params=0)))
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(x.shape).astype(np.float32)
        for name, x in flat_names(nnx.to_pure_dict(nnx.state(abstract, nnx.Param))).items()
    }


@pytest.fixture(scope="module")
def fsdp_program():
    return toy_program(Toy(), (1, 4, 2))


def test_init_rules_load_subtrees_and_list_the_rest_as_fresh(fsdp_program):
    program = fsdp_program
    state = program.init_state(key())
    targets = {**flat_names(state["params"]), **flat_names(program.frozen)}
    sources = {
        "pre": _source_weights(CONFIG, 1),
        "teacher": _source_weights(dataclasses.replace(CONFIG, num_layers=3), 2)
    }
    rules = (
        InitRule("encoder", "pre"),  # the encoder from a pre-training run; the head fresh
        InitRule("encoder/layers/1", "teacher", "encoder/layers/2"),  # layer i ← layer j
        InitRule("teacher", "teacher", "encoder/layers/0"))  # the frozen block
    plan = weights.plan(rules, {
        n: v.shape
        for n, v in targets.items()
    }, {
        s: {
            n: v.shape
            for n, v in t.items()
        }
        for s, t in sources.items()
    })

    assert set(plan.loaded) | set(plan.fresh) == set(targets)
    assert not set(plan.loaded) & set(plan.fresh)
    assert plan.fresh == ["head/bias", "head/kernel"]
    assert plan.loaded["encoder/layers/0/up/kernel"] == ("pre", "encoder/layers/0/up/kernel")
    assert plan.loaded["encoder/layers/1/up/kernel"] == ("teacher", "encoder/layers/2/up/kernel")
    assert plan.loaded["teacher/down/bias"] == ("teacher", "encoder/layers/0/down/bias")
    assert plan.summary({
        "pre": "p",
        "teacher": "t"
    }) == ("weights: 5 tensors from pre (p); 8 tensors from teacher (t); "
           "fresh: head/bias, head/kernel")

    params = weights.apply(plan, state["params"], sources, program.state_shardings["params"])
    teacher = weights.apply(plan, program.frozen, sources, program.frozen_shardings)
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
    with pytest.raises(
            FlaxlmError,
            match=re.escape("wide tensor encoder/layers/1/down/kernel has shape (32, 64), but "
                            "encoder/layers/0/down/kernel needs (128, 64)")):
        weights.plan((InitRule("encoder/layers/0", "wide", "encoder/layers/1"), ), {
            n: v.shape
            for n, v in targets.items()
        }, {
            s: {
                n: v.shape
                for n, v in t.items()
            }
            for s, t in narrow.items()
        })


def test_load_returns_state_and_frozen_and_leaves_the_program_alone(fsdp_program, monkeypatch):
    """`weights.load` hands back the loaded state and frozen variables; the program's own frozen
    variables stay what they were until the trainer sets them."""
    program = fsdp_program
    state = program.init_state(key())
    before = program.frozen
    source = _source_weights(CONFIG, 4)
    nested: dict = {}
    for name, value in source.items():
        *parents, leaf = name.split("/")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    monkeypatch.setattr(weights, "read_params", lambda path: (nested, None, 3))
    objective = Toy(ToyConfig(fresh_head=True, teacher_from="runs/t"))
    loaded, frozen, line = weights.load(program, objective, "runs/pre", state, program.frozen)
    assert program.frozen is before
    assert line.startswith("weights: ") and "fresh: head/bias, head/kernel" in line
    np.testing.assert_array_equal(
        flat_names(frozen)["teacher/up/kernel"], source["encoder/layers/0/up/kernel"])
    np.testing.assert_array_equal(
        flat_names(loaded["params"])["encoder/layers/1/up/kernel"],
        source["encoder/layers/1/up/kernel"])
    resumed, frozen_again, _ = weights.load(program, objective, "runs/pre", None, program.frozen)
    assert resumed is None and program.frozen is before
    np.testing.assert_array_equal(
        flat_names(frozen_again)["teacher/up/kernel"], source["encoder/layers/0/up/kernel"])


def test_every_objective_has_the_required_members_and_the_optional_groups():
    """The 12 required members of `Objective` (the `Config` attribute included) are declared, and
    every registered objective, the toy too, has all of them and every optional one."""
    from flaxlm.run.protocol import Objective, ObjectiveDefaults
    declared = ({n
                 for n in vars(Objective) if not n.startswith("_")}
                | set(Objective.__annotations__))
    optional = ({n
                 for n in vars(ObjectiveDefaults) if not n.startswith("_")}
                | set(ObjectiveDefaults.__annotations__))
    assert "Config" in declared and len(declared - optional) == 12, sorted(declared - optional)
    for cls in (*registry.OBJECTIVES.values(), Toy):
        missing = sorted(n for n in declared if not hasattr(cls, n))
        assert not missing, (cls.name, missing)
        assert dataclasses.is_dataclass(cls.Config), cls.name


# -- d. per-leaf learning-rate scales ------------------------------------------------------------
def test_layer_decay_keeps_moments_sharded_and_scales_updates(fsdp_program):
    decayed, plain = toy_program(Toy(ToyConfig(layer_decay=0.5)), (1, 4, 2)), fsdp_program
    state = decayed.init_state(key())
    params = flat_names(state["params"])
    moments = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]:
        if leaf.ndim:
            name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
            assert leaf.sharding == params[name].sharding, name
            moments += 1
    assert moments == 2 * len(params)  # Adam's mu and nu, one each per parameter
    assert params["encoder/embed/embedding"].sharding.spec == P("tensor", "fsdp")

    batch = toy_batches(1)[0]
    before = {k: np.asarray(v) for k, v in flat_names(jax.device_get(state["params"])).items()}
    after_decayed = flat_names(
        jax.device_get(
            decayed.train_step(state, host_batch_to_global(decayed.mesh, batch))[0]["params"]))
    after_plain = flat_names(
        jax.device_get(
            plain.train_step(plain.init_state(key()), host_batch_to_global(plain.mesh,
                                                                           batch))[0]["params"]))
    scales = {
        "encoder/embed/": 0.125,
        "encoder/layers/0/": 0.25,
        "encoder/layers/1/": 0.5,
        "head/": 1.0
    }
    for name, p in before.items():
        scale = next(s for prefix, s in scales.items() if name.startswith(prefix))
        step_plain = after_plain[name] - p
        # Power-of-two scales are exact; each side rounds once when added to the parameter.
        ulp = np.spacing(np.float32(np.abs(p).max() + np.abs(step_plain).max()))
        np.testing.assert_allclose(after_decayed[name] - p, scale * step_plain, rtol=0, atol=ulp,
                                   err_msg=name)
        assert np.abs(step_plain).max() > 100 * ulp, name  # the step itself is not rounding


def test_multi_transform_is_refused_by_the_strict_sharding_check():
    def groups(params):
        return {
            k: jax.tree.map(lambda _: "head" if k == "head" else "body", v)
            for k, v in params.items()
        }

    optimizer = optax.multi_transform({
        "body": optax.adamw(1e-3),
        "head": optax.adamw(1e-2)
    }, groups)
    with pytest.raises(
            FlaxlmError, match=r"train-state leaf opt_state/\S+ .* matches no "
            r"parameter.*multi_transform"):
        toy_program(Toy(), (1, 4, 2), optimizer=optimizer)


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
    evals = [m for m in Workdir(str(toy_run)).read_metrics() if "eval_f1" in m]
    assert [m["step"] for m in evals] == [2, 4, 6]
    assert all("eval_loss" not in m for m in evals)  # the toy's own metrics, nothing MLM-shaped
    f1 = [m["eval_f1"] for m in evals]
    best_step = evals[int(np.argmax(f1))]["step"]  # argmax: the first of equal values, as "max"
    assert json.loads((toy_run / "best.json").read_text()) == {
        "step": best_step,
        "metric": "f1",
        "mode": "max",
        "value": max(f1)
    }
    # keep_checkpoints=1 keeps the newest, and the best beside it.
    assert best_step < 6
    assert sorted(os.listdir(toy_run / "checkpoints")) == sorted([str(best_step), "6"])
    running_best = np.maximum.accumulate(f1)
    improved = [m["step"] for i, m in enumerate(evals) if i == 0 or f1[i] > running_best[i - 1]]
    assert [m["step"] for m in evals if "best_eval_f1" in m] == improved
    assert all(m["best_eval_f1"] == running_best[i] for i, m in enumerate(evals)
               if "best_eval_f1" in m)
    train_lines = [m for m in Workdir(str(toy_run)).read_metrics() if "loss" in m]
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
    assert re.search(
        r"resumed from checkpoint 1; frozen weights: 4 tensors from teacher "
        r"\(.*, step 6\); fresh: none;",
        capsys.readouterr().out)


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
from tests import toy_objective as t
program = t.toy_program(t.Toy(), (4, 1, 1))
state = program.init_state(t.key())
# Process p holds rows [8p, 8p + 8) of each global batch: exactly the order of the global rows.
batches = [{k: np.split(v, processes)[index] for k, v in b.items()} for b in t.toy_batches(2)]
print("METRICS " + json.dumps(evaluate(program, state["params"], program.mesh, batches)))
"""


@pytest.mark.slow
def test_host_side_metrics_see_every_process_rows(tmp_path):
    """Two processes × 2 devices evaluate the same global batches as one process × 4 devices."""
    from launch.local import free_port, process_env

    def start(processes, devices, index, coordinator):
        return subprocess.Popen(
            [sys.executable, "-c", _EVAL_SCRIPT, coordinator,
             str(processes),
             str(index)], cwd=REPO, env=process_env(devices), stdout=subprocess.PIPE,
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

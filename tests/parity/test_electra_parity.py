"""ELECTRA training parity: flaxlm's `electra` objective and one AdamW step of its trainer against
an independent PyTorch implementation of google-research/electra's loss
(benchmarks/reference/electra_upstream.py: transformers' ElectraForMaskedLM and
ElectraForPreTraining, the loss written from upstream's source), from the same weights, the same
batch (flaxlm's masks) and the same Gumbel noise (exported from the objective for the step key).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxlm.convert.electra import abstract_pair, pair_from_hf, pair_to_hf
from flaxlm.convert.hf_config import write_hf_config
from flaxlm.convert.mappings.tables import table_for
from flaxlm.models.param_tree import flat_names, unflatten_like
from flaxlm.objectives.electra import Electra, ElectraConfig
from flaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer
from flaxlm.run.steps import StepConfig, TrainProgram
from flaxlm.sharding import MeshConfig, host_batch_to_global, make_mesh
from tests.convert.conftest import randomize_torch
from tests.test_electra import CONFIG, electra_batch

torch = pytest.importorskip("torch")
up = pytest.importorskip("benchmarks.reference.electra_upstream")

RNG_SEED = 7  # the train state's base key: the step-0 loss runs under fold_in(key(7), 0)


def torch_pair(objective: Electra):
    """Random transformers towers (noise on every tensor), embeddings shared as upstream."""
    import transformers

    generator_config = objective.generator_config(CONFIG)
    torch.manual_seed(0)
    discriminator = transformers.ElectraForPreTraining(
        write_hf_config(table_for("electra", "electra"), CONFIG))
    generator = transformers.ElectraForMaskedLM(
        write_hf_config(table_for("electra", "mlm"), generator_config))
    randomize_torch(discriminator, 0)
    randomize_torch(generator, 1)
    up.share_embeddings(generator, discriminator)
    return generator, discriminator


def flaxlm_params(objective: Electra, generator, discriminator):
    """The same weights in flaxlm's tree, through the conversion tables."""
    tensors = {
        "discriminator": {
            k: v.detach().numpy()
            for k, v in discriminator.state_dict().items()
        },
        "generator": {
            k: v.detach().numpy()
            for k, v in generator.state_dict().items()
        }
    }
    generator_config = objective.generator_config(CONFIG)
    flat = pair_from_hf(CONFIG, generator_config, tensors, {
        "discriminator": "discriminator",
        "generator": "generator"
    })
    _, abstract = abstract_pair(CONFIG, generator_config)
    return jax.tree.map(jnp.asarray, unflatten_like(abstract, flat))


def reference_loss(objective: Electra, generator, discriminator, batch, noise_BxMxV):
    c = objective.config
    return up.electra_loss(generator, discriminator, up.upstream_batch(batch),
                           torch.tensor(np.asarray(noise_BxMxV)), temperature=c.temperature,
                           disallow_correct=c.disallow_correct,
                           uniform_generator=c.uniform_generator, gen_weight=c.generator_weight,
                           disc_weight=c.discriminator_weight)


def step_key():
    return jax.random.fold_in(jax.random.key(RNG_SEED), 0)


@pytest.mark.parametrize("config", [
    ElectraConfig(temperature=2.0, disallow_correct=True),
    ElectraConfig(uniform_generator=True),
], ids=["disallow_correct-T2", "uniform_generator"])
def test_loss_switches_match_upstream(config):
    objective = Electra(config)
    generator, discriminator = torch_pair(objective)
    params = flaxlm_params(objective, generator, discriminator)
    batch = electra_batch(np.random.default_rng(11))
    graphdef, _ = nnx.split(objective.build_model(CONFIG, nnx.Rngs(params=0)), nnx.Param)
    key = step_key()
    loss, sums = jax.jit(lambda p, b: objective.loss(nnx.merge(
        graphdef, p), b, objective.normalizers(b), dtype=jnp.float32, dropout_key=key))(params,
                                                                                        batch)
    noise = objective.sampling_noise(key, (*batch["masked_labels"].shape, CONFIG.vocab_size))
    with torch.no_grad():
        ref = reference_loss(objective, generator, discriminator, batch, noise)
    assert float(loss) == pytest.approx(ref["loss"].item(), rel=1e-5)
    fake = ref["is_fake"].numpy()
    assert float(sums["replaced"]) == fake.sum()
    used = batch["masked_weights"] > 0
    if config.disallow_correct:  # every used slot becomes a fake
        assert fake.sum() == used.sum()
    if config.uniform_generator:
        assert ref["generator_loss"].item() == pytest.approx(np.log(CONFIG.vocab_size), rel=1e-5)


def batch_with_likely_token(rng, token: int) -> dict:
    """A batch whose first slot of every row holds `token` (input kept or [MASK]ed)."""
    batch = electra_batch(rng)
    rows = np.nonzero(batch["masked_weights"][:, 0] > 0)[0]
    positions = batch["masked_positions"][rows, 0]
    kept = batch["input_ids"][rows, positions] == batch["masked_labels"][rows, 0]
    batch["input_ids"][rows[kept], positions[kept]] = token
    batch["masked_labels"][rows, 0] = token
    return batch


def test_loss_and_one_adamw_step_match_upstream():
    objective = Electra(ElectraConfig())  # upstream's defaults: temperature 1, weights 1 and 50
    generator, discriminator = torch_pair(objective)
    # A generator that often proposes token 7, so some samples equal their original ("original"
    # by upstream's label rule) and others do not.
    with torch.no_grad():
        generator.generator_lm_head.bias[7] += 6.0
    params = flaxlm_params(objective, generator, discriminator)
    batch = batch_with_likely_token(np.random.default_rng(12), 7)
    noise = objective.sampling_noise(step_key(), (*batch["masked_labels"].shape, CONFIG.vocab_size))

    # At lr 1e-3 an Adam step moves a weight by up to ~1e-3, 100 times the tolerance; an element
    # whose gradient is near eps (1e-6) moves by lr · g / (|g| + eps), where float rounding of g
    # shows, so a larger lr would test the rounding rather than the implementations.
    optim = OptimConfig(learning_rate=1e-3, warmup_steps=0, total_steps=10, weight_decay=0.01,
                        b1=0.9, b2=0.999, eps=1e-6, max_grad_norm=1.0)
    mesh = make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    program = TrainProgram(objective, CONFIG, make_optimizer(optim), learning_rate_schedule(optim),
                           mesh, StepConfig())
    rng_data = jax.random.key_data(jax.random.key(RNG_SEED))
    program.set_frozen(program.init_frozen(rng_data))
    state = program.state_from_params(params, rng_data)
    state, metrics = program.train_step(state, host_batch_to_global(mesh, batch))

    ref = reference_loss(objective, generator, discriminator, batch, noise)
    assert ref["is_fake"].sum() > 0 and (ref["is_fake"].sum() < (batch["masked_weights"] > 0).sum())
    assert float(metrics["loss"]) == pytest.approx(ref["loss"].item(), rel=1e-5)
    assert float(metrics["generator_loss"]) == pytest.approx(ref["generator_loss"].item(), rel=1e-5)
    assert float(metrics["discriminator_loss"]) == pytest.approx(ref["discriminator_loss"].item(),
                                                                 rel=1e-5)

    before = {
        (t, n): p.detach().clone()
        for t, m in (("discriminator", discriminator), ("generator", generator))
        for n, p in m.state_dict().items()
    }
    opt = torch.optim.AdamW(up.decay_groups(generator, discriminator, optim.weight_decay),
                            lr=optim.learning_rate, betas=(optim.b1, optim.b2), eps=optim.eps)
    params_list = [p for g in opt.param_groups for p in g["params"]]
    ref["loss"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params_list, optim.max_grad_norm)
    assert float(metrics["grad_norm"]) == pytest.approx(grad_norm.item(), rel=1e-5)
    assert grad_norm.item() > optim.max_grad_norm  # clipping is exercised
    opt.step()

    stepped = pair_to_hf(CONFIG, objective.generator_config(CONFIG),
                         flat_names(jax.device_get(state["params"])))
    moved = 0.0
    for tower, model in (("discriminator", discriminator), ("generator", generator)):
        ours = stepped[tower]
        for name, value in model.state_dict().items():
            if name not in ours:  # buffers (position ids)
                continue
            np.testing.assert_allclose(ours[name], value.numpy(), rtol=0, atol=1e-5,
                                       err_msg=f"{tower} {name}")
            moved = max(moved, float((value - before[tower, name]).abs().max()))
    assert moved > 50 * 1e-5  # the step moved weights far more than the tolerance

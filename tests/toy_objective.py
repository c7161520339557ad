"""A toy objective for the protocol tests (tests/test_protocol.py), written like a real one.

The model is small but shaped like the real ones: every parameter carries logical axes (so it
shards), an `encoder` with a tied embedding and a list of layers, a token `head`, and a `teacher`
block that the objective freezes. Its loss has two terms over different counts: cross-entropy at
masked slots + 50 × a per-token term (the head's cross-entropy plus the distance to the teacher's
features), the shape of ELECTRA's generator + discriminator loss. Evaluation reduces token
predictions to F1 on the host and selects the best checkpoint by it.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flaxlm.models.config import preset
from flaxlm.models.heads import gather_positions
from flaxlm.models.layers import DenseGeneral, Embed
from flaxlm.objectives.mlm import masked_xent_sums
from flaxlm.optim import OptimConfig, learning_rate_schedule, make_optimizer
from flaxlm.run.protocol import EvalSelection, InitRule, ObjectiveDefaults
from flaxlm.run.steps import StepConfig, TrainProgram
from flaxlm.sharding import MeshConfig, make_mesh

CONFIG = preset("tiny", hidden_dropout=0.0, attention_dropout=0.0)  # D=64, F=128, 2 layers
ROWS, LENGTH, SLOTS = 16, 16, 6
TOKEN_WEIGHT = 50.0


# -- the toy model -------------------------------------------------------------------------------
class Block(nnx.Module):
    def __init__(self, d: int, f: int, *, rngs: nnx.Rngs):
        self.up = DenseGeneral((d, ), (f, ), ("embed", ), ("mlp", ), rngs=rngs)
        self.down = DenseGeneral((f, ), (d, ), ("mlp", ), ("embed", ), rngs=rngs)

    def __call__(self, x_BxLxD):
        return x_BxLxD + self.down(jnp.tanh(self.up(x_BxLxD)))


class ToyEncoder(nnx.Module):
    def __init__(self, config, *, rngs: nnx.Rngs):
        self.embed = Embed(config.vocab_size, config.hidden_size, ("vocab", "embed"), rngs=rngs)
        self.layers = nnx.List([
            Block(config.hidden_size, config.intermediate_size, rngs=rngs)
            for _ in range(config.num_layers)
        ])

    def __call__(self, e_BxLxD):
        for layer in self.layers:
            e_BxLxD = layer(e_BxLxD)
        return e_BxLxD


class ToyModel(nnx.Module):
    def __init__(self, config, *, rngs: nnx.Rngs):
        self.encoder = ToyEncoder(config, rngs=rngs)
        self.head = DenseGeneral((config.hidden_size, ), (2, ), ("embed", ), ("labels", ),
                                 rngs=rngs)
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
    return {
        "input_ids": ids_BxL.astype(np.int32),
        "attention_mask": mask_BxL.astype(np.int32),
        "masked_positions": rng.integers(0, lengths_B[:, None], (rows, SLOTS)).astype(np.int32),
        "masked_labels": rng.integers(5, vocab, (rows, SLOTS)).astype(np.int32),
        "masked_weights": (rng.random((rows, SLOTS)) < 0.7).astype(np.float32)
    }


class Toy(ObjectiveDefaults):
    name = "toy"
    head = "token_classification"  # what config.json records; the toy is never exported
    Config = ToyConfig
    selection = EvalSelection("f1", "max")
    summary_keys = ("loss", "slot_loss", "token_loss")

    def __init__(self, config: ToyConfig | None = None):
        self.config = config or ToyConfig()
        self.frozen = (nnx.PathContains("teacher") if self.config.freeze_teacher else nnx.Nothing())

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
        depth = {
            "encoder/embed/": config.num_layers + 1,
            **{
                f"encoder/layers/{i}/": config.num_layers - i
                for i in range(config.num_layers)
            }
        }
        return {
            name: self.config.layer_decay ** d
            for name in param_paths
            for prefix, d in depth.items() if name.startswith(prefix)
        }

    # -- data ----------------------------------------------------------------------------------
    def train_batches(self, ctx, start_example):
        rng = np.random.default_rng([ctx.seed, ctx.process_index, start_example])
        while True:
            yield toy_batch(rng, ctx.host_batch_size, ctx.data.seq_len, ctx.tokenizer.vocab_size)

    def eval_batches(self, ctx):
        rng = np.random.default_rng([ctx.seed, ctx.process_index, 999])
        return [
            toy_batch(rng, ctx.host_batch_size, ctx.data.seq_len, ctx.tokenizer.vocab_size)
            for _ in range(2)
        ]

    def batch_spec(self, global_batch, data):
        rows, slots = (global_batch, data.seq_len), (global_batch, SLOTS)
        return {
            "input_ids": jax.ShapeDtypeStruct(rows, jnp.int32),
            "attention_mask": jax.ShapeDtypeStruct(rows, jnp.int32),
            "masked_positions": jax.ShapeDtypeStruct(slots, jnp.int32),
            "masked_labels": jax.ShapeDtypeStruct(slots, jnp.int32),
            "masked_weights": jax.ShapeDtypeStruct(slots, jnp.float32)
        }

    def real_counts(self, host_batch):
        return {
            "tokens": float(np.count_nonzero(host_batch["attention_mask"])),
            "slots": float(np.count_nonzero(host_batch["masked_weights"]))
        }

    # -- loss ----------------------------------------------------------------------------------
    def normalizers(self, batch):
        return {
            "slots": jnp.maximum(jnp.sum(batch["masked_weights"]), 1.0),
            "tokens": jnp.maximum(jnp.sum(batch["attention_mask"].astype(jnp.float32)), 1.0)
        }

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
        label_BxL = jnp.take_along_axis(logits_BxLx2,
                                        token_labels(batch["input_ids"])[..., None], axis=-1)[...,
                                                                                              0]
        head_xent_BxL = jax.nn.logsumexp(logits_BxLx2, axis=-1) - label_BxL
        # The frozen teacher's features of the same embeddings are a distillation target.
        target_BxLxD = jax.lax.stop_gradient(model.teacher(e_BxLxD))
        distance_BxL = jnp.mean(jnp.square(x_BxLxD - target_BxLxD), axis=-1)
        token_sum = jnp.sum((head_xent_BxL + distance_BxL) * mask_BxL)
        loss = slot_sum / normalizers["slots"] + TOKEN_WEIGHT * token_sum / normalizers["tokens"]
        return loss, {
            "slot_sum": slot_sum,
            "token_sum": token_sum,
            "slots": jnp.sum(batch["masked_weights"]),
            "tokens": jnp.sum(mask_BxL)
        }

    def metrics(self, sums):
        slot_loss = sums["slot_sum"] / jnp.maximum(sums["slots"], 1.0)
        token_loss = sums["token_sum"] / jnp.maximum(sums["tokens"], 1.0)
        return {
            "loss": slot_loss + TOKEN_WEIGHT * token_loss,
            "slot_loss": slot_loss,
            "token_loss": token_loss,
            "slots": sums["slots"],
            "tokens": sums["tokens"]
        }

    # -- evaluation: token predictions, reduced to F1 on the host --------------------------------
    def eval_outputs(self, model, batch, *, dtype):
        x_BxLxD = model.encoder(model.encoder.embed(batch["input_ids"], dtype))
        return {"predictions": jnp.argmax(model.head(x_BxLxD), axis=-1).astype(jnp.int32)}

    def eval_metrics(self, outputs, batches, plan=None):
        real = np.concatenate([b["attention_mask"].ravel() > 0 for b in batches])
        gold = np.concatenate([token_labels(b["input_ids"]).ravel() for b in batches])[real]
        pred = np.concatenate([o["predictions"].ravel() for o in outputs])[real]
        tp, fp_fn = np.sum((pred == 1) & (gold == 1)), np.sum(pred != gold)
        return {
            "f1": float(2 * tp / max(2 * tp + fp_fn, 1)),
            "accuracy": float(np.mean(pred == gold))
        }

    def train_flops(self, config, seq_len, counts):
        d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
        per_token = 6 * config.num_layers * 2 * d * f + 6 * 2 * d + 2 * 2 * d * f  # + teacher fwd
        return per_token * counts["tokens"] + 6 * d * v * counts["slots"]


# -- driving it ----------------------------------------------------------------------------------
def toy_program(objective, mesh_shape, accum=1, optimizer=None, config=CONFIG):
    """A TrainProgram for `objective` on the first devices, AdamW at 1e-3 without warmup."""
    optim = OptimConfig(learning_rate=1e-3, warmup_steps=0, total_steps=10)
    mesh = make_mesh(MeshConfig(*mesh_shape), jax.devices()[:int(np.prod(mesh_shape))])
    return TrainProgram(objective, config, optimizer or make_optimizer(optim),
                        learning_rate_schedule(optim), mesh, StepConfig(grad_accum_steps=accum))


def key(seed=0):
    return jax.random.key_data(jax.random.key(seed))


def toy_batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [toy_batch(rng, ROWS, LENGTH, CONFIG.vocab_size) for _ in range(n)]

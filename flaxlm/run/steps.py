"""The train state, its sharded initialization, and the jitted train and eval steps.

State is a plain pytree so orbax saves it as is:
  params      nested dict of fp32 arrays (the model's trainable `nnx.Param`s, `nnx.to_pure_dict`)
  opt_state   optax state over params; every array leaf mirrors a parameter's path
  step        int32, number of batches consumed
  rng         uint32[2] base key; every random draw derives from (rng, step), so resuming at
              step t replays exactly the dropout of an uninterrupted run
  skipped     int32, updates skipped because the loss or gradients were not finite
Frozen variables (those the objective's `frozen` filter selects: a teacher, frozen embeddings) are
not part of the state: they get no gradient and no optimizer state, are passed to the step as a
separate, non-donated argument sharded by the same logical-axis rules, and are re-read from their
source when a run starts (`set_frozen`) rather than checkpointed.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flaxlm.errors import FlaxlmError
from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import logical_axes
from flaxlm.models.param_tree import flat_names
from flaxlm.optim import scale_by_leaf
from flaxlm.run.protocol import Objective
from flaxlm.sharding import constrain, logical_to_spec, named_sharding

State = dict[str, Any]
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Top-level state entries that are not parameters: small, replicated by design.
_REPLICATED_STATE = ("step", "rng", "skipped")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    grad_accum_steps: int = 1
    # "bfloat16": bf16 matmuls, fp32 master weights, optimizer, logits and loss. "auto": bfloat16
    # on accelerators, float32 on CPU (no bf16 matmul units there: bf16 runs slower).
    compute_dtype: str = "float32"


def resolve_compute_dtype(name: str, platform: str) -> str:
    if name == "auto":
        return "float32" if platform == "cpu" else "bfloat16"
    return name


def _dict_path(path) -> tuple:
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


def axes_by_name(axes_tree) -> dict[str, tuple]:
    """{parameter name: logical axes} for a tree of logical-axis tuples."""
    return flat_names(axes_tree, is_leaf=lambda x: isinstance(x, tuple))


def batch_shape(batch: Mapping[str, Any]) -> tuple:
    """What a jitted step's cache is keyed on, for batches of fixed dtypes: the arrays' shapes."""
    return tuple(sorted((k, tuple(v.shape)) for k, v in batch.items()))


class TrainProgram:
    """Everything compiled for one (objective, model, optimizer, mesh): built once per run.

    The objective's `lr_scales` ({"/"-joined parameter name: factor}) scale each parameter's
    update (layer-wise learning-rate decay) through a stateless transformation, so optimizer-state
    paths still equal parameter paths and keep their shardings.
    """
    def __init__(self, objective: Objective, model_config: ModelConfig,
                 optimizer: optax.GradientTransformation, schedule: optax.Schedule, mesh: Mesh,
                 step_config: StepConfig):
        self.objective, self.model_config = objective, model_config
        self.schedule, self.mesh = schedule, mesh
        self.config = step_config
        platform = mesh.devices.flat[0].platform
        self.compute_dtype = resolve_compute_dtype(step_config.compute_dtype, platform)
        self.dtype = _DTYPES[self.compute_dtype]
        if model_config.attention == "splash" and platform != "tpu":
            raise FlaxlmError(f"model.attention='splash' is a TPU kernel; this run's devices are "
                              f"{platform}: use 'dot_product'")

        # Shapes first: the model is never materialized on one device.
        abstract_model = nnx.eval_shape(
            lambda: objective.build_model(model_config, nnx.Rngs(params=0)))
        self.graphdef, abstract_frozen, abstract_params = nnx.split(abstract_model,
                                                                    objective.frozen, nnx.Param)
        self.param_axes = nnx.to_pure_dict(logical_axes(abstract_params))
        self.frozen_axes = nnx.to_pure_dict(logical_axes(abstract_frozen))
        pure_params = nnx.to_pure_dict(abstract_params)
        lr_scales = objective.lr_scales(model_config, list(flat_names(pure_params)))
        self.optimizer = optimizer if lr_scales is None else optax.chain(
            optimizer, scale_by_leaf(lr_scales, pure_params))
        self.sharding_notes: list[str] = []
        self.abstract_state = jax.eval_shape(self._init, jax.random.key_data(jax.random.key(0)))
        self.state_shardings = self._shardings(self.abstract_state)
        self.abstract_frozen = jax.eval_shape(self._init_frozen,
                                              jax.random.key_data(jax.random.key(0)))
        self.frozen_shardings = self._frozen_shardings(self.abstract_frozen)
        self.batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
        replicated = NamedSharding(mesh, P())
        self.frozen: Any = None  # set by `init_state` or `set_frozen`

        self._init_state_jit = jax.jit(self._init, out_shardings=self.state_shardings)
        self._init_frozen_jit = jax.jit(self._init_frozen, out_shardings=self.frozen_shardings)
        # Frozen variables are an argument, not a constant: never donated, never baked in.
        self.jitted_train_step = jax.jit(
            self._with_mesh(self._train_step),
            in_shardings=(self.state_shardings, self.frozen_shardings, self.batch_sharding),
            out_shardings=(self.state_shardings, replicated), donate_argnums=(0, ))
        self.jitted_eval_step = jax.jit(
            self._with_mesh(self._eval_step),
            in_shardings=(self.state_shardings["params"], self.frozen_shardings,
                          self.batch_sharding), out_shardings=replicated)
        # The batch shapes each jitted step was called with: jit compiles once per shape, so
        # these count its compilations (fine-tuning's length buckets keep them few).
        self.shapes_seen: dict[str, set] = {"train": set(), "eval": set()}

    def _with_mesh(self, fn: Callable) -> Callable:
        """Trace `fn` with the mesh set, so the model's activation constraints take effect."""
        @functools.wraps(fn)
        def traced(*args):
            with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
                return fn(*args)

        return traced

    # -- state ---------------------------------------------------------------------------------
    def _split_init(self, rng_data: jax.Array):
        model = self.objective.build_model(self.model_config,
                                           nnx.Rngs(params=jax.random.wrap_key_data(rng_data)))
        _, frozen, params = nnx.split(model, self.objective.frozen, nnx.Param)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(frozen)

    def _init(self, rng_data: jax.Array) -> State:
        return self.state_from_params(self._split_init(rng_data)[0], rng_data)

    def _init_frozen(self, rng_data: jax.Array):
        return self._split_init(rng_data)[1]

    def state_from_params(self, params, rng_data) -> State:
        return {
            "params": params,
            "opt_state": self.optimizer.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": rng_data,
            "skipped": jnp.zeros((), jnp.int32)
        }

    def init_state(self, rng_data) -> State:
        """A fresh sharded state; frozen variables, if none were set, are initialized too."""
        if self.frozen is None:
            self.frozen = self.init_frozen(rng_data)
        return self.fresh_state(rng_data)

    def fresh_state(self, rng_data) -> State:
        """A fresh sharded state, leaving the frozen variables as they are."""
        return self._init_state_jit(rng_data)

    def init_frozen(self, rng_data) -> Any:
        """Freshly initialized frozen variables (before any are loaded from their source)."""
        return self._init_frozen_jit(rng_data)

    def set_frozen(self, frozen) -> None:
        self.frozen = jax.device_put(frozen, self.frozen_shardings)

    def _check_rank(self, name: str, axes: tuple, leaf) -> None:
        if len(axes) != leaf.ndim:
            raise FlaxlmError(f"{name}: {leaf.ndim}-d tensor with {len(axes)} logical axes")

    def _sharding_for(self, name: str, axes: tuple, shape) -> NamedSharding:
        sharding = named_sharding(self.mesh, axes, shape)
        wanted = logical_to_spec(axes, None, self.mesh)
        if sharding.spec != wanted:
            # An explicit, logged decision rather than a silent one (`sharding_notes`).
            self.sharding_notes.append(
                f"{name} {tuple(shape)}: axes {axes} would be sharded as {wanted} but a dimension "
                f"is not divisible by its mesh axes; kept as {sharding.spec}")
        return sharding

    def _shardings(self, abstract_state: State) -> State:
        """Each optimizer-state array takes its parameter's sharding; anything else is an error."""
        by_name = axes_by_name(self.param_axes)

        def sharding_for(path, leaf):
            keys = _dict_path(path)
            if keys[0] in _REPLICATED_STATE or leaf.ndim == 0:
                return NamedSharding(self.mesh, P())  # counters, the base key, optax counts
            name = "/".join(map(str, keys))
            # Optimizer moments mirror the params' dict paths: drop the top-level state key.
            axes = by_name.get("/".join(map(str, keys[1:])))
            if axes is None:
                raise FlaxlmError(
                    f"train-state leaf {name} {leaf.shape} matches no parameter, so it has no "
                    "sharding; an optimizer must keep its state paths equal to parameter paths "
                    "(per-group settings as per-leaf scales or masks, not optax.multi_transform)")
            self._check_rank(name, axes, leaf)
            return self._sharding_for(name, axes, leaf.shape)

        return jax.tree_util.tree_map_with_path(sharding_for, abstract_state)

    def _frozen_shardings(self, abstract_frozen) -> Any:
        by_name = axes_by_name(self.frozen_axes)

        def sharding_for(path, leaf):
            name = "/".join(map(str, _dict_path(path)))
            axes = by_name[name]
            name = "frozen/" + name
            self._check_rank(name, axes, leaf)
            return self._sharding_for(name, axes, leaf.shape)

        return jax.tree_util.tree_map_with_path(sharding_for, abstract_frozen)

    # -- steps ---------------------------------------------------------------------------------
    def train_step(self, state: State, batch: Mapping[str, jax.Array]):
        self.shapes_seen["train"].add(batch_shape(batch))
        return self.jitted_train_step(state, self._frozen_or_fail(), batch)

    def eval_step(self, params, batch: Mapping[str, jax.Array]):
        """(the objective's eval outputs, the global batch), replicated on every device."""
        self.shapes_seen["eval"].add(batch_shape(batch))
        return self.jitted_eval_step(params, self._frozen_or_fail(), batch)

    def compiles(self, step: str, batch: Mapping[str, jax.Array] | None = None) -> int:
        """Compilations of the "train" or "eval" step so far; with `batch`, whether calling the
        step on it compiles (1) or not (0)."""
        if batch is not None:
            return int(batch_shape(batch) not in self.shapes_seen[step])
        return len(self.shapes_seen[step])

    def _frozen_or_fail(self):
        if self.frozen is None:
            raise RuntimeError("TrainProgram.frozen is unset: call init_state or set_frozen first")
        return self.frozen

    def _grads_and_sums(self, params, frozen, batch, normalizers, dropout_key):
        def loss_fn(p):
            model = nnx.merge(self.graphdef, frozen, p)
            return self.objective.loss(model, batch, normalizers, dtype=self.dtype,
                                       dropout_key=dropout_key)

        (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, sums

    def _train_step(self, state: State, frozen, batch: Mapping[str, jax.Array]):
        params, accum = state["params"], self.config.grad_accum_steps
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        # Every loss term's count over the whole batch, before it is split: each micro-batch's
        # loss is then already normalized, and micro-batch gradients simply add up.
        normalizers = self.objective.normalizers(batch)
        if accum == 1:
            grads, sums = self._grads_and_sums(params, frozen, batch, normalizers, step_key)
        else:
            # Row r goes to micro-batch r % accum, so every device keeps an equal share of each
            # micro-batch and the split needs no communication.
            def split(x):
                x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
                return constrain(x, (None, "batch") + (None, ) * (x.ndim - 2))

            micro_batches = jax.tree.map(split, batch)

            def body(carry, xs):
                index, micro = xs
                g, s = self._grads_and_sums(params, frozen, micro, normalizers,
                                            jax.random.fold_in(step_key, index))
                return jax.tree.map(jnp.add, carry, (g, s)), None

            zeros = jax.eval_shape(self._grads_and_sums, params, frozen,
                                   jax.tree.map(lambda x: x[0], micro_batches), normalizers,
                                   step_key)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
            (grads, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro_batches))

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(grad_norm) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(s)) for s in jax.tree.leaves(sums)]))
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        # A non-finite step leaves params and optimizer untouched, so NaN never reaches a checkpoint.
        keep = functools.partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
        new_state = {
            "params": keep(new_params, params),
            "opt_state": keep(opt_state, state["opt_state"]),
            "step": state["step"] + 1,
            "rng": state["rng"],
            "skipped": state["skipped"] + (~finite).astype(jnp.int32),
        }
        # optax counts applied updates only (a skipped step restores its state), so this is the
        # learning rate the update used, also after skipped steps.
        applied_lr = self.schedule(state["step"] - state["skipped"])
        metrics = dict(self.objective.metrics(sums), grad_norm=grad_norm, learning_rate=applied_lr,
                       finite=finite, skipped=new_state["skipped"])
        return new_state, metrics

    def _eval_step(self, params, frozen, batch):
        model = nnx.merge(self.graphdef, frozen, params)
        # The batch comes back with the outputs, both replicated: with several processes each
        # host gets every row's outputs, and host-side metrics must pair them with every row's
        # labels in the same order, not with this host's rows.
        return self.objective.eval_outputs(model, batch, dtype=self.dtype), batch

    # -- bookkeeping ---------------------------------------------------------------------------
    def model(self, params, frozen=None) -> nnx.Module:
        return nnx.merge(self.graphdef, self.frozen if frozen is None else frozen, params)

    def param_count(self) -> int:
        return sum(x.size for x in jax.tree.leaves(self.abstract_state["params"]))

    def frozen_count(self) -> int:
        return sum(x.size for x in jax.tree.leaves(self.abstract_frozen))

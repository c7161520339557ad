"""The train state, its sharded initialization, and the jitted train and eval steps.

State is a plain pytree so orbax saves it as is:
  params      nested dict of fp32 arrays (the model's `nnx.Param`s, `nnx.to_pure_dict`)
  opt_state   optax state over params
  step        int32, number of batches consumed (also the data-stream position)
  rng         uint32[2] base key; every random draw derives from (rng, step), so resuming at
              step t replays exactly the dropout of an uninterrupted run
  skipped     int32, updates skipped because the loss or gradients were not finite
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

from flaxlm.models.config import ModelConfig
from flaxlm.models.heads import logical_axes
from flaxlm.objectives.base import Objective
from flaxlm.sharding import constrain, named_sharding

State = dict[str, Any]
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class StepConfig:
    grad_accum_steps: int = 1
    compute_dtype: str = "float32"  # "bfloat16": bf16 matmuls, fp32 master weights and optimizer


def _dict_path(path) -> tuple:
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))


class TrainProgram:
    """Everything compiled for one (objective, model, optimizer, mesh): built once per run."""

    def __init__(self, objective: Objective, model_config: ModelConfig,
                 optimizer: optax.GradientTransformation, schedule: optax.Schedule, mesh: Mesh,
                 step_config: StepConfig):
        self.objective, self.model_config = objective, model_config
        self.optimizer, self.schedule, self.mesh = optimizer, schedule, mesh
        self.config = step_config
        self.dtype = _DTYPES[step_config.compute_dtype]

        # Shapes first: the model is never materialized on one device.
        abstract_model = nnx.eval_shape(
            lambda: objective.build_model(model_config, nnx.Rngs(params=0)))
        self.graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
        self.param_axes = nnx.to_pure_dict(logical_axes(abstract_params))
        self.abstract_state = jax.eval_shape(self._init, jax.random.key_data(jax.random.key(0)))
        self.state_shardings = self._shardings(self.abstract_state)
        self.batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
        replicated = NamedSharding(mesh, P())

        self.init_state = jax.jit(self._init, out_shardings=self.state_shardings)
        self.train_step = jax.jit(
            self._with_mesh(self._train_step),
            in_shardings=(self.state_shardings, self.batch_sharding),
            out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
        self.eval_step = jax.jit(
            self._with_mesh(self._eval_step),
            in_shardings=(self.state_shardings["params"], self.batch_sharding),
            out_shardings=replicated)

    def _with_mesh(self, fn: Callable) -> Callable:
        """Trace `fn` with the mesh set, so the model's activation constraints take effect."""
        @functools.wraps(fn)
        def traced(*args):
            with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
                return fn(*args)
        return traced

    # -- state ---------------------------------------------------------------------------------
    def _init(self, rng_data: jax.Array) -> State:
        model = self.objective.build_model(
            self.model_config, nnx.Rngs(params=jax.random.wrap_key_data(rng_data)))
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return self.state_from_params(params, rng_data)

    def state_from_params(self, params, rng_data) -> State:
        return {"params": params, "opt_state": self.optimizer.init(params),
                "step": jnp.zeros((), jnp.int32), "rng": rng_data,
                "skipped": jnp.zeros((), jnp.int32)}

    def _shardings(self, abstract_state: State) -> State:
        flat_axes = {_dict_path(p): axes for p, axes in jax.tree_util.tree_flatten_with_path(
            self.param_axes, is_leaf=lambda x: isinstance(x, tuple))[0]}

        def sharding_for(path, leaf):
            # Optimizer moments mirror the params' dict paths and take their sharding.
            # Drop the top-level state key ("params", "opt_state") to get the parameter's path.
            axes = flat_axes.get(_dict_path(path)[1:])
            if axes is None or len(axes) != leaf.ndim:
                return NamedSharding(self.mesh, P())
            return named_sharding(self.mesh, axes, leaf.shape)
        return jax.tree_util.tree_map_with_path(sharding_for, abstract_state)

    def params_sharded(self, params) -> Any:
        """Place host (or differently sharded) params with this program's parameter shardings."""
        return jax.device_put(params, self.state_shardings["params"])

    # -- steps ---------------------------------------------------------------------------------
    def _grads_and_sums(self, params, batch, dropout_key):
        def loss_fn(p):
            model = nnx.merge(self.graphdef, p)
            sums = self.objective.loss_sums(model, batch, dtype=self.dtype,
                                            dropout_key=dropout_key)
            return sums["loss_sum"], sums
        (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, sums

    def _train_step(self, state: State, batch: Mapping[str, jax.Array]):
        params, accum = state["params"], self.config.grad_accum_steps
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        if accum == 1:
            grads, sums = self._grads_and_sums(params, batch, step_key)
        else:
            # Row r goes to micro-batch r % accum, so every device keeps an equal share of each
            # micro-batch and the split needs no communication.
            def split(x):
                x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
                return constrain(x, (None, "batch") + (None,) * (x.ndim - 2))
            micro_batches = jax.tree.map(split, batch)

            def body(carry, xs):
                index, micro = xs
                g, s = self._grads_and_sums(params, micro, jax.random.fold_in(step_key, index))
                return jax.tree.map(jnp.add, carry, (g, s)), None
            zeros = jax.eval_shape(self._grads_and_sums, params,
                                   jax.tree.map(lambda x: x[0], micro_batches), step_key)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
            (grads, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro_batches))

        # Sums over the whole batch, normalized once: identical to one step on the full batch.
        grads = jax.tree.map(lambda g: g / jnp.maximum(sums["weight_sum"], 1.0), grads)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(sums["loss_sum"]) & jnp.isfinite(grad_norm)
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
        metrics = dict(self.objective.metrics(sums), grad_norm=grad_norm,
                       learning_rate=self.schedule(state["step"]), finite=finite,
                       skipped=new_state["skipped"])
        return new_state, metrics

    def _eval_step(self, params, batch):
        model = nnx.merge(self.graphdef, params)
        return self.objective.loss_sums(model, batch, dtype=self.dtype, dropout_key=None)

    # -- bookkeeping ---------------------------------------------------------------------------
    def model(self, params) -> nnx.Module:
        return nnx.merge(self.graphdef, params)

    def param_count(self) -> int:
        return sum(x.size for x in jax.tree.leaves(self.abstract_state["params"]))

"""flaxlm's jitted, donated train step (flaxlm/run/steps.py) on an in-memory synthetic batch, for any
objective of benchmarks/objectives.py."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.model_specs import model_config
from benchmarks.objectives import OBJECTIVES
from benchmarks.runners.shared import timed_steps

_PROGRAMS: dict = {}


def compute_dtype(platform: str) -> str:
    """bf16 matmuls on accelerators (fp32 master weights); fp32 on CPU, which has no fast bf16."""
    return "float32" if platform == "cpu" else "bfloat16"


def build_program(spec: dict, objective):
    import jax
    from flaxlm import experiment
    from flaxlm.optim import OptimConfig
    from flaxlm.run.steps import StepConfig
    from flaxlm.sharding import MeshConfig, make_mesh

    # The same AdamW every baseline uses: lr 1e-4, wd 0.01 (not on biases/LayerNorm), clip 1.0.
    optim = OptimConfig(learning_rate=1e-4, warmup_steps=0, total_steps=100_000, weight_decay=0.01,
                        eps=1e-6, max_grad_norm=1.0)
    mesh = make_mesh(MeshConfig(data=-1))
    dtype = compute_dtype(jax.devices()[0].platform)
    program = experiment.build_program(objective, model_config(spec), optim, mesh,
                                       StepConfig(compute_dtype=dtype))
    return program, mesh, dtype


def program_for(spec: dict):
    """(program, mesh, dtype, objective) for a step spec; cached so in-process (smoke) runs
    compile each step once."""
    key = (spec["objective"], spec["arch"], spec["vocab"], tuple(sorted(spec["model"].items())),
           spec["batch"], spec["seq"], spec.get("dropout", True), spec.get("attention", "xla"),
           spec.get("attention_dropout"), spec.get("pack_predictions", False))
    if key not in _PROGRAMS:
        objective, batch_fn = OBJECTIVES[spec["objective"]].make(spec)
        program, mesh, dtype = build_program(spec, objective)
        _PROGRAMS[key] = (program, mesh, dtype, batch_fn)
    return _PROGRAMS[key]


_MATMUL: dict = {}


def matmul_rate(dtype_name: str, size: int, reps: int) -> dict:
    """Measured dense matmul FLOP/s of this device at `dtype_name` (median of `reps`)."""
    import jax
    import jax.numpy as jnp
    if (dtype_name, size) not in _MATMUL:  # operands and compilation once per process
        dtype = jnp.dtype(dtype_name)
        ka, kb = jax.random.split(jax.random.key(0))
        a = jax.random.normal(ka, (size, size), jnp.float32).astype(dtype)
        b = jax.random.normal(kb, (size, size), jnp.float32).astype(dtype)
        dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dtype))
        dot(a, b).block_until_ready()
        _MATMUL[dtype_name, size] = dot, a, b
    dot, a, b = _MATMUL[dtype_name, size]
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        dot(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    seconds = float(np.median(times))
    return {
        "flops_per_s": 2.0 * size ** 3 / seconds,
        "seconds": seconds,
        "size": size,
        "dtype": dtype_name,
        "times": times
    }


class FlaxlmStep:
    def __init__(self, spec: dict):
        import jax
        from flaxlm.sharding import host_batch_to_global

        self.spec = spec
        self.program, self.mesh, self.dtype, batch_fn = program_for(spec)
        objective = self.program.objective
        host_batch = batch_fn(np.random.default_rng(0))
        # Synthetic input: placed on the devices once, so the step never waits for input.
        self.batch = host_batch_to_global(self.mesh, host_batch)
        self.state = self.program.init_state(jax.random.key_data(jax.random.key(0)))
        t = time.perf_counter()
        self._step()
        compile_s = time.perf_counter() - t
        for _ in range(spec["warmup"]):
            self._step()
        config = self.program.model_config
        m = host_batch["masked_positions"].shape[1] if "masked_positions" in host_batch else 0
        packed = getattr(objective.config, "pack_predictions", False)
        if packed:  # the head runs over the packed capacity, not over every slot
            m = _packed_slots_per_row(objective.config, host_batch, jax.device_count())
        real = int(host_batch["masked_weights"].sum()) if "masked_weights" in host_batch else 0
        tokens = float(np.count_nonzero(host_batch["attention_mask"]))
        per_example = objective.train_flops(config, spec["seq"], {
            "tokens": spec["seq"],
            "predictions": m
        })
        useful_per_example = objective.train_flops(config, spec["seq"], {
            "tokens": tokens / spec["batch"],
            "predictions": real / spec["batch"]
        })
        device = jax.devices()[0]
        self.info = {
            "compile_s": compile_s,
            "params": self.program.param_count(),
            "flops_per_step": per_example * spec["batch"],
            "tokens_per_step": tokens,
            "useful_flops_per_step": useful_per_example * spec["batch"],
            "prediction_slots": m,
            "real_predictions_per_example": real / spec["batch"],
            "platform": device.platform,
            "device_kind": device.device_kind,
            "device_count": jax.device_count(),
            "compute_dtype": self.dtype,
            "attention": config.attention,
            "pack_predictions": packed,
            "jax": jax.__version__
        }

    def _step(self):
        self.state, metrics = self.program.train_step(self.state, self.batch)
        metrics["loss"].block_until_ready()
        return metrics

    def run(self, n: int) -> dict:
        return timed_steps(self._step, n, loss_of=lambda metrics: float(metrics["loss"]))

    def peak(self, size: int = 0, reps: int = 2) -> dict:
        """The matmul rate MFU is taken against, measured in this process between rounds."""
        platform = self.info["platform"]
        size = size or (4096 if platform == "cpu" else 8192)
        dtype = "float32" if platform == "cpu" else "bfloat16"
        return matmul_rate(dtype, size, reps)


def _packed_slots_per_row(config, host_batch: dict, devices: int) -> float:
    """Slots per row the packed head computes: its capacity per data-parallel shard."""
    from flaxlm.objectives.packed_predictions import capacity
    rows, slots = host_batch["masked_positions"].shape
    seq_len = host_batch["input_ids"].shape[1]
    shards = devices if rows % devices == 0 else 1
    per_shard = capacity(rows // shards, slots, seq_len, config.mask_rate, config.pack_headroom)
    return per_shard * shards / rows


def build(spec: dict) -> FlaxlmStep:
    if spec["kind"] == "flaxlm-step-unpacked":  # the same step with its head over every slot
        spec = dict(spec, pack_predictions=False)
    return FlaxlmStep(spec)

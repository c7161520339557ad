"""`python -m benchmarks.layer_bytes [B]`: XLA's TPU cost model for one MiniLM layer (forward and
backward, B × 512 tokens, bf16, compiled for one v5e chip; no TPU needed), per attention
implementation and dropout setting: FLOPs, bytes accessed, temporaries, roofline time. The
per-layer numbers of docs/scaling.md ("Fitted micro-batches and fused attention")."""
import sys
import time
import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from flaxlm import aot, jax_platform, topology
from flaxlm.models.config import preset
from flaxlm.models.encoder import Layer

# (attention, attention dropout, hidden dropout)
VARIANTS = [("xla", 0.1, 0.1), ("xla", 0.0, 0.1), ("splash", 0.0, 0.1), ("xla", 0.0, 0.0),
            ("splash", 0.0, 0.0)]


def main(batch: int) -> None:
    jax_platform.select()  # before JAX starts: no TPU-probe noise on a CPU-only machine
    devices = topology.topology_devices(topology.parse_topology("v5e-1"))
    mesh = Mesh(devices, ("data", ))
    replicated = NamedSharding(mesh, P())
    for attention, attention_dropout, hidden_dropout in VARIANTS:
        config = preset("minilm-l6-h384", attention=attention, vocab_size=14610,
                        attention_dropout=attention_dropout, hidden_dropout=hidden_dropout)
        graphdef, params = nnx.split(nnx.eval_shape(lambda: Layer(config, rngs=nnx.Rngs(0))),
                                     nnx.Param)
        params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                              params)
        x_BxLxD = jax.ShapeDtypeStruct((batch, 512, 384), jnp.bfloat16, sharding=replicated)
        bias_Bx1x1xL = jax.ShapeDtypeStruct((batch, 1, 1, 512), jnp.float32, sharding=replicated)

        def loss(params, x_BxLxD, bias_Bx1x1xL):
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                y_BxLxD = nnx.merge(graphdef, params)(x_BxLxD, bias_Bx1x1xL, jax.random.key(0))
            return jnp.sum(y_BxLxD.astype(jnp.float32))

        start = time.time()
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x_BxLxD,
                                                                 bias_Bx1x1xL).compile()
        cost = aot._cost(compiled)
        flops, accessed = cost.get("flops", 0.0), cost.get("bytes accessed", 0.0)
        print(
            f"{attention:7s} attention dropout {attention_dropout} hidden dropout "
            f"{hidden_dropout} B={batch}: flops {flops / 1e9:.1f} GFLOP, bytes "
            f"{accessed / 2**30:.3f} GiB, temps "
            f"{compiled.memory_analysis().temp_size_in_bytes / 2**30:.3f} GiB, roofline "
            f"{max(flops / 197e12, accessed / 819e9) * 1e3:.2f} ms "
            f"(compile {time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)

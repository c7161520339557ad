"""Multi-host entry point: join the JAX job, then run the normal `flaxlm` command line.

Every host runs the same command. On Cloud TPU VM slices nothing needs naming:
  python -m launch.multihost train --config configs/xlmr_base_mlm.py --workdir gs://BUCKET/run
Elsewhere (other clusters, local tests) name the coordinator (process 0's host:port) and this
process:
  python -m launch.multihost --coordinator 10.0.0.2:8476 --num-processes 4 --process-id 1 \
      -- train --config configs/xlmr_base_mlm.py --workdir /shared/run
`flaxlm train --distributed` is the same with auto-detection only. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import sys


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m launch.multihost",
        description="Initialize jax.distributed, then run `flaxlm ARGS...` on this host.")
    parser.add_argument("--coordinator", help="HOST:PORT of process 0 (auto on Cloud TPU VMs)")
    parser.add_argument("--num-processes", type=int, help="processes in the job (auto on TPU)")
    parser.add_argument("--process-id", type=int, help="this process, 0..N-1 (auto on TPU)")
    parser.add_argument("flaxlm_args", nargs=argparse.REMAINDER,
                        help="the flaxlm command, e.g. train --config ... --workdir ...")
    args = parser.parse_args(argv)
    rest = args.flaxlm_args[1:] if args.flaxlm_args[:1] == ["--"] else args.flaxlm_args
    if not rest:
        parser.error("no flaxlm command given (e.g. -- train --config C --workdir W)")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    args, rest = parse(list(sys.argv[1:] if argv is None else argv))
    from flaxlm.distributed import initialize
    initialize(args.coordinator, args.num_processes, args.process_id)
    from flaxlm.cli import main as flaxlm_main
    return flaxlm_main(rest)


if __name__ == "__main__":
    sys.exit(main())

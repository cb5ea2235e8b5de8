"""soak profile RUN: where each phase's time went, from a --cl-profile run."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = """Reads the `cl_profile` events of a run made with --cl-profile (OpenCL through soak's
interposer) and says, per phase (load, prefill, decode), where the time went: kernels (top
kernels by device time), transfers (bytes, GB/s), device idle gaps (the device waiting for the
host: launch-bound), host-only time (host span beyond the device span) and host time inside CL
calls; per token: kernels per token, mean kernel time, idle fraction.  The closure line compares
kernels + transfers + idle + host-only with the phase time the engine measured (within 10 %).

With --vs CPU_RUN (a CPU run of the same seeded workload: same --seed, --iterations,
--max-new-tokens), it says which part makes the GPU slower per phase.

Examples:
  soak run --backend opencl --cl-profile --seed 1 --iterations 20 --run-id gpu ...
  soak run --backend cpu --seed 1 --iterations 20 --run-id cpu ...
  soak profile logs/gpu --vs logs/cpu
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder made with --cl-profile (logs/<run-id>)")
    p.add_argument("--vs", metavar="RUN", help="a CPU run of the same seeded workload to compare with")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")


def run(args: argparse.Namespace) -> int:
    from soak.analysis.profile import explain, profile_run, render, same_workload
    from soak.analysis.loaded_run import RunFolder
    from soak.errors import BadInput

    gpu = RunFolder(args.run)
    result = profile_run(gpu)
    lines: list[str] = []
    if args.vs:
        cpu = RunFolder(args.vs)
        problem = same_workload(gpu, cpu)
        if problem:
            raise BadInput(f"--vs {args.vs} is not the same seeded workload: {problem}",
                           "run the CPU side with the same --seed, --iterations and --max-new-tokens")
        lines = explain(result, cpu)
        result["vs"] = {"run_dir": str(cpu.path), "explanation": lines}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(render(result, lines))
    if not result["windows"]:
        raise BadInput(f"{args.run} has no cl_profile events",
                       "run it with --cl-profile on the OpenCL backend (the interposer must be on)")
    return 0

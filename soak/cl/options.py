"""`soak run` options for the OpenCL interposer.

`options_from_args` gives the dict stored as RunConfig.intercept (None: no
interposer), which `soak.cl.interposer.prepare` turns into the worker's env.
"""

from __future__ import annotations

import argparse
import re

from soak.cl.fault_rules import join_spec, parse_spec
from soak.cl.interposer import DEFAULT_PROFILE_BUDGET, DEFAULT_PROFILE_QUEUE, DEFAULT_PROFILE_SAMPLE, PROFILE_QUEUES
from soak.errors import BadInput

_BYTES_RE = re.compile(r"(\d+)\s*([kKmMgGtT]?)(i?[bB])?")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str | int) -> int:
    """'536870912', '512M', '2G', '1.5G' is refused; units are powers of 1024."""
    if isinstance(text, int):
        return text
    m = _BYTES_RE.fullmatch(str(text).strip())
    if not m:
        raise BadInput(f"bad byte count {text!r}", "use a whole number with an optional K/M/G/T suffix, e.g. 512M")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("OpenCL interposer (records CL calls, injects faults)")
    g.add_argument("--intercept", dest="intercept", action="store_true", default=None,
                   help="load the worker's libOpenCL.so through soak's interposer (default: on with --backend opencl)")
    g.add_argument("--no-intercept", dest="intercept", action="store_false",
                   help="let the engine load OpenCL directly (no CL call records, no GPU bytes)")
    g.add_argument("--cl-fault", action="append", default=[], metavar="SPEC",
                   help="inject OpenCL faults: errors, e.g. clEnqueueNDRangeKernel=-5@nth:50 or "
                        "clCreateBuffer=CL_MEM_OBJECT_ALLOCATION_FAILURE@p:0.01,seed:7; silent ones, e.g. "
                        "clEnqueueNDRangeKernel=skip@kernel:softmax*,nth:3 or "
                        "clEnqueueWriteBuffer=corrupt:bitflip:4@nth:200 (repeatable; grammar: soak/cl/fault_rules.py)")
    g.add_argument("--cl-gpu-override", action="store_true",
                   help="report CPU/accelerator OpenCL devices as GPUs (MNN's OpenCL backend on PoCL)")
    g.add_argument("--cl-mem-limit", metavar="BYTES", type=parse_bytes,
                   help="fail OpenCL allocations beyond this many live bytes (e.g. 512M)")
    g.add_argument("--cl-profile", action="store_true",
                   help="time kernels and transfers on the device (profiling queues), device idle gaps "
                        "and host time per CL call; one cl_profile event per iteration and phase")
    g.add_argument("--cl-profile-sample", metavar="N", type=int, default=None,
                   help=f"with --cl-profile: time 1 kernel launch in N per kernel name (transfers and other commands: "
                        f"per entry point), a fixed rate (default: {DEFAULT_PROFILE_SAMPLE} at "
                        "first, then what --cl-profile-budget allows; the others get their kernel's mean; 1: every "
                        "launch, which slows launch-bound GPU decode about 2x)")
    g.add_argument("--cl-profile-budget", metavar="PCT", type=float, default=None,
                   help=f"with --cl-profile: keep the profiler's own host time within PCT %% of each phase's wall "
                        f"time, adapting the rate per kernel name and phase (default {DEFAULT_PROFILE_BUDGET:g}; "
                        "0 or --cl-profile-sample alone: a fixed rate)")
    g.add_argument("--cl-profile-queue", choices=PROFILE_QUEUES, default=None,
                   help="with --cl-profile: where timed commands run: engine (the engine's queues get profiling, "
                        "the default) or twin (the engine's queues stay as made; each timed command runs on a "
                        "profiling twin of its queue, in order: for a driver where a profiling queue slows every "
                        "launch)")
    g.add_argument("--cl-real-lib", metavar="PATH",
                   help="the real OpenCL library the interposer forwards to (default: libOpenCL.so.1 as found)")


def options_from_args(args: argparse.Namespace, backend: str | None) -> dict | None:
    """RunConfig.intercept: a dict of interposer settings, or None when the interposer is off.
    args: parsed with add_run_arguments; backend: the run's backend (opencl turns the interposer on)."""
    faults = list(args.cl_fault or [])
    override = bool(args.cl_gpu_override)
    mem_limit = args.cl_mem_limit
    real_lib = args.cl_real_lib
    profile = bool(args.cl_profile)
    sample = args.cl_profile_sample
    if sample is not None and not profile:
        raise BadInput("--cl-profile-sample needs --cl-profile", "add --cl-profile or drop --cl-profile-sample")
    if sample is not None and not 1 <= sample <= 1_000_000:
        raise BadInput(f"--cl-profile-sample {sample}: not a whole number from 1 to 1000000",
                       f"use 1 (every kernel launch) or more (default {DEFAULT_PROFILE_SAMPLE})")
    budget = getattr(args, "cl_profile_budget", None)
    if budget is not None and not profile:
        raise BadInput("--cl-profile-budget needs --cl-profile", "add --cl-profile or drop --cl-profile-budget")
    if budget is not None and not 0 <= budget <= 100:
        raise BadInput(f"--cl-profile-budget {budget:g}: not a percentage from 0 to 100",
                       f"use e.g. {DEFAULT_PROFILE_BUDGET:g} (the default) or 0 (a fixed rate)")
    queue = getattr(args, "cl_profile_queue", None)
    if queue is not None and not profile:
        raise BadInput("--cl-profile-queue needs --cl-profile", "add --cl-profile or drop --cl-profile-queue")
    if budget is None and profile:
        budget = 0.0 if sample is not None else DEFAULT_PROFILE_BUDGET
    intercept = args.intercept
    wants = bool(faults or override or mem_limit or profile)
    if intercept is False:
        if wants:
            raise BadInput("--cl-fault, --cl-gpu-override, --cl-mem-limit and --cl-profile need the interposer",
                           "drop --no-intercept")
        return None
    if intercept is None and not wants and backend != "opencl":
        return None
    rules = parse_spec(faults)
    return {
        "faults": join_spec(rules),
        "gpu_override": override,
        "mem_limit": int(mem_limit) if mem_limit else None,
        "real_lib": real_lib,
        "profile": profile,
        "profile_sample": (sample or DEFAULT_PROFILE_SAMPLE) if profile else None,
        "profile_budget": budget if profile else None,
        "profile_queue": (queue or DEFAULT_PROFILE_QUEUE) if profile else None,
    }

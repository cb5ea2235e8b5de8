"""soak run: a soak loop on one engine, written to logs/<run-id>/."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from soak import errors
from soak.cl.options import add_run_arguments as add_interposer_arguments
from soak.cl.options import options_from_args
from soak.diagnostics import get_logger
from soak.loop import ladder as recovery
from soak.loop.config import BACKENDS, ENGINE_KINDS, RunConfig, parse_duration
from soak.loop.session import Timeouts
from soak.outputs.gate import add_run_arguments as add_gate_arguments
from soak.run_folder import SUMMARY

DESCRIPTION = """Run a soak: repeated randomized inference with fault capture and recovery.

Engines:
  test      soak's fault-injecting test engine (no model needed; --fault-plan)
  mnn-pip   pip MNN (MNN.llm, CPU only); --model defaults to the embedded tiny Qwen2
  mnn       your hand-built MNN (--mnn-build DIR or $SOAK_MNN_BUILD): soak builds its shim
            and loads libMNN_CL.so first
  lib       any library implementing native/include/soak_engine.h (--engine-lib)

Examples:
  soak run --demo
  soak run --engine mnn-pip --model soak/models/qwen2-tiny --iterations 200
  soak run --engine mnn --mnn-build ~/MNN/build --model qwen-0.5b/config.json \\
           --backend opencl --thread-num 68 --duration 8h
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--demo", action="store_true",
                   help="short soak on the test engine with every fault kind injected")
    g.add_argument("--engine", choices=ENGINE_KINDS, default=None, help="engine kind (default: test with --demo, else mnn-pip)")
    g.add_argument("--engine-lib", metavar="PATH", help="engine library (.so) for --engine lib")
    g.add_argument("--mnn-build", metavar="DIR", help="hand-built MNN build folder for --engine mnn "
                   "(default $SOAK_MNN_BUILD; its source folder from $SOAK_MNN_SOURCE)")
    g.add_argument("--plugin", action="append", default=[], metavar="PATH",
                   help="backend plugin loaded RTLD_GLOBAL before the engine, e.g. libMNN_CL.so (repeatable)")
    g.add_argument("--model", metavar="PATH", help="model config.json (or its folder)")
    g.add_argument("--fault-plan", metavar="FILE", help="test engine: JSON list of faults to inject")
    m = p.add_argument_group("MNN runtime config (applied before load)")
    m.add_argument("--backend", choices=BACKENDS, default=None, help="backend_type (default cpu; opencl with --demo)")
    m.add_argument("--precision", choices=("low", "normal", "high"), help="precision: low = fp16")
    m.add_argument("--memory", choices=("low", "normal", "high"), help="memory: low keeps int4/int8 weights quantized")
    m.add_argument("--thread-num", type=int, metavar="N",
                   help="CPU: thread count. OpenCL: NOT a thread count but a bit field of GPU modes "
                        "(1 tuning none, 2 heavy, 4 wide, 8 normal, 16 fast, 64 buffer, 128 image, "
                        "256 record op, 512 record batch; exactly one tuning bit). MNN recommends 68 "
                        "= buffer + wide tuning")
    m.add_argument("--power", choices=("low", "normal", "high"), help="power hint (low on OpenCL needs driver support)")
    m.add_argument("--use-mmap", action=argparse.BooleanOptionalAction, default=None,
                   help="write weights to disk (tmp_path) to save memory")
    m.add_argument("--tmp-path", metavar="DIR", help="MNN tmp_path: mmap files and mnn_cachefile.bin (kernel cache)")
    w = p.add_argument_group("workload and length")
    w.add_argument("--iterations", type=int, metavar="N", help="stop after N iterations (default 100 if no --duration)")
    w.add_argument("--duration", metavar="TIME", help="stop after TIME (e.g. 30s, 10m, 8h)")
    w.add_argument("--seed", type=int, default=0, help="workload seed (same seed, same prompts)")
    w.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    w.add_argument("--max-turns", type=int, default=4, metavar="N", help="turns per conversation")
    w.add_argument("--context", type=int, metavar="TOKENS", help="longest prompt, in tokens (default: model context or 2048)")
    r = p.add_argument_group("supervision and recovery")
    r.add_argument("--timeout-load", type=float, default=600.0, metavar="S")
    r.add_argument("--timeout-respond", type=float, default=300.0, metavar="S")
    r.add_argument("--timeout-stall", type=float, default=3.0, metavar="S",
                   help="a respond whose text stops coming for S seconds is a hang (scaled up for engines "
                        "seen to be slow; 0: only --timeout-respond)")
    r.add_argument("--timeout-reset", type=float, default=60.0, metavar="S")
    r.add_argument("--timeout-teardown", type=float, default=120.0, metavar="S",
                   help="time the engine gets to shut down at the end (MNN saves its kernel cache then)")
    r.add_argument("--recovery", default=",".join(recovery.STEPS), metavar="STEPS",
                   help="recovery ladder, cheapest first (default: reset,reinit,reload,restart)")
    r.add_argument("--recover-on-output", action="store_true",
                   help="also climb the ladder on bad output (garbage, invalid UTF-8, repetition, empty)")
    r.add_argument("--fail-fast", action="store_true", help="stop at the first failure (exit 1)")
    r.add_argument("--memory-interval", type=float, default=1.0, metavar="S", help="memory sampling timer")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="logs", metavar="DIR", help="parent folder of run folders (default logs/)")
    o.add_argument("--run-id", help="name of the run folder (default: time-engine-backend-random)")
    o.add_argument("--quiet", action="store_true", help="nothing but errors: no progress, summary or gate table")
    o.add_argument("--json", action="store_true", help=f"print {SUMMARY} alone to stdout at the end "
                   "(people text always goes to stderr)")
    q = p.add_argument_group("wrong-answer oracle (teacher-forced logits against a reference)")
    q.add_argument("--reference", metavar="FILE|RUN",
                   help="check teacher-forced turns against this reference (`soak reference`'s run folder or "
                        "its reference.jsonl); made for the same model, seed and workload options")
    q.add_argument("--oracle-every", type=int, default=1, metavar="N",
                   help="teacher-force one conversation in N (all its turns); the others run free (default 1)")
    p.add_argument("--target", action="append", default=[], metavar="TARGET",
                   help="local (default) or adb[:SERIAL] (repeatable: several phones in parallel)")
    add_interposer_arguments(p)
    add_gate_arguments(p)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    from soak.loop.demo import DEMO_ENGINE, DEMO_ITERATIONS, DEMO_PLAN

    engine = args.engine or ("test" if args.demo or args.fault_plan else "mnn-pip")
    backend = args.backend or ("opencl" if args.demo else "cpu")
    plan = None
    engine_extra: dict = {}
    if args.fault_plan:
        path = Path(args.fault_plan)
        try:
            plan = json.loads(path.read_text())
        except FileNotFoundError:
            raise errors.BadInput(f"fault plan not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise errors.BadInput(f"fault plan {path} is not valid JSON: {exc}") from None
        if isinstance(plan, dict):  # a whole test engine config: {"faults": [...], "opencl": true, ...}
            engine_extra = {k: v for k, v in plan.items() if k != "faults"}
            plan = plan.get("faults", [])
        if not isinstance(plan, list):
            raise errors.BadInput(f"fault plan {path} must be a JSON list of faults")
        if engine != "test":
            raise errors.BadInput("--fault-plan works with the test engine only",
                                  "for real engines inject OpenCL faults with --cl-fault")
    elif args.demo:
        plan = DEMO_PLAN
    iterations = args.iterations
    duration = parse_duration(args.duration) if args.duration else None
    if iterations is None and duration is None:
        iterations = DEMO_ITERATIONS if args.demo else 100
    if iterations is not None and iterations < 0:
        raise errors.BadInput("--iterations must be >= 0")
    options = {"precision": args.precision, "memory": args.memory, "thread_num": args.thread_num,
               "power": args.power, "use_mmap": args.use_mmap, "tmp_path": args.tmp_path}
    if not args.timeout_stall >= 0:  # also refuses nan
        raise errors.BadInput("--timeout-stall must be a number of seconds >= 0", "0 turns the stall timer off")
    timeouts = Timeouts(load=args.timeout_load, respond=args.timeout_respond, reset=args.timeout_reset,
                        stall=args.timeout_stall or None,
                        teardown=args.timeout_teardown)
    if args.demo:
        timeouts.respond = min(timeouts.respond, 2.0)
    cfg = RunConfig(
        engine=engine, engine_lib=args.engine_lib, mnn_build=args.mnn_build, plugins=args.plugin, model=args.model, backend=backend,
        engine_options=options, iterations=iterations, duration_s=duration, seed=args.seed,
        fail_fast=args.fail_fast, out_dir=args.out, run_id=args.run_id, fault_plan=plan,
        test_engine={**(DEMO_ENGINE if args.demo else {}), **engine_extra}, max_new_tokens=args.max_new_tokens,
        max_turns=args.max_turns, context_tokens=args.context, timeouts=timeouts,
        ladder=recovery.parse_ladder(args.recovery), recover_on_output=args.recover_on_output or args.demo,
        memory_interval_s=min(args.memory_interval, 0.25) if args.demo else args.memory_interval,
        argv=sys.argv[1:], quiet=args.quiet, demo=args.demo,
    )
    if getattr(args, "reference", None) or getattr(args, "make_reference", False):
        from soak.loop.oracle_turns import OracleConfig

        cfg.oracle = OracleConfig(reference=getattr(args, "reference", None), every=getattr(args, "oracle_every", 1),
                                  make=getattr(args, "make_reference", False),
                                  topk=getattr(args, "oracle_topk", 10))
    explicit = args.intercept or args.cl_fault or args.cl_gpu_override or args.cl_mem_limit
    # the test engine makes no OpenCL calls: the interposer only on request
    if cfg.engine != "test" or explicit:
        cfg.intercept = options_from_args(args, cfg.backend)
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    policy = expectations = None
    targets = args.target or ["local"]
    if (args.expectations or args.rerun_unexpected) and not args.gate:
        raise errors.BadInput("--expectations and --rerun-unexpected label the gate's causes: add --gate POLICY")
    if args.gate:  # a bad policy or baseline is bad input before the soak starts, not after hours
        from soak.analysis.loaded_run import RunFolder
        from soak.outputs.expectations import load_expectations
        from soak.outputs.policy import load_policy

        policy = load_policy(args.gate)
        if args.baseline:
            RunFolder(args.baseline)
        expectations = load_expectations(args.expectations) if args.expectations else None
        if args.rerun_unexpected < 0 or (args.rerun_unexpected and targets != ["local"]):
            raise errors.BadInput("--rerun-unexpected N needs N >= 0 and the local target",
                                  "re-run a phone's causes afterwards: soak gate RUN --rerun-unexpected N")
    if targets != ["local"]:
        from soak.multi_device import run_on_targets

        return run_on_targets(cfg, targets, gate=args.gate, baseline=args.baseline, json_out=args.json,
                              junit=args.junit, expectations=expectations)
    from soak.judges import run_judged

    result = run_judged(cfg)
    code = result.exit_code
    if policy is not None:
        from soak.outputs.gate import gate_run

        causes = None
        if expectations is not None or args.rerun_unexpected:
            from soak.rerun import rerun_unexpected

            causes = rerun_unexpected(result.run_dir, expectations, args.rerun_unexpected,
                                      log=None if args.quiet else get_logger("soak.rerun").info)
        passed, _ = gate_run(result.run_dir, policy, baseline=args.baseline, junit_path=args.junit,
                             quiet=args.quiet, causes=causes)
        if not passed and code == 0:
            code = int(errors.ExitCode.FAILED)
    if args.json:
        print(json.dumps(result.summary, indent=2))
    return code

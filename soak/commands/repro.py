"""soak repro: the smallest workload and configuration that still show one root cause."""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from pathlib import Path

from soak.errors import BadInput, ExitCode

DESCRIPTION = """
syzkaller's pkg/repro on a soak run: the window that led to the cause's first
occurrence (its iteration, conversation and the conversations before it on the
same engine), then the iteration alone on a fresh engine, the earlier
conversations bisected, fewer turns, shorter and simpler prompts, fewer new
tokens, engine options dropped one at a time (GPU mode bits on OpenCL), and an
injected fault narrowed to the one call that matters.  A step is kept only when
the same cause comes back; reliability is k of n runs.  Writes RUN/repro/
(or BUNDLE-repro/ beside a bundle): the minimal script (`soak replay
RUN/repro/<cause>`), its configuration, reliability, steps, repro.md and a
standalone MNN reproducer (llm_demo command line or a C++ program).

Examples:
  soak repro logs/RUN                      # the first row of `soak classify`
  soak repro logs/RUN --cause 2 --budget 20m
  soak repro logs/RUN --cause sig-af8e4862aa0c --quiet
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN|BUNDLE", help="run folder (logs/<run-id>) or a bundle .tar.gz")
    p.add_argument("--cause", metavar="N|SIG", help="row of `soak classify` (from 1), catalog id or signature "
                   "(default: the first row)")
    p.add_argument("--budget", default="10m", metavar="TIME", help="time for the reduction (default 10m; the "
                   "reliability runs follow)")
    p.add_argument("--runs", type=int, default=None, metavar="N", help="runs that measure the result's "
                   "reliability (default 10)")
    p.add_argument("--memory-share", type=float, default=None, metavar="F", help="memory causes: the share of "
                   "the window's bytes a smaller workload must keep (default 0.5)")
    p.add_argument("--out", metavar="DIR", help="where repro/ goes (default: RUN/repro, or BUNDLE-repro)")
    p.add_argument("--engine-lib", metavar="PATH", help="a bundle's --engine lib run: the engine library to load")
    p.add_argument("--plugin", action="append", default=[], metavar="PATH", help="backend plugin (repeatable)")
    p.add_argument("--mnn-build", metavar="DIR", help="hand-built MNN (default $SOAK_MNN_BUILD)")
    p.add_argument("--model", metavar="PATH", help="the model (a bundle's recorded path is the sender's)")
    p.add_argument("--quiet", "-q", action="store_true", help="no live display")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from soak.loop.config import parse_duration
    from soak.repro import MEMORY_SHARE, RELIABILITY_RUNS
    from soak.outputs.replay_source import is_bundle

    budget = parse_duration(args.budget)
    if budget <= 0:
        raise BadInput(f"--budget must be > 0, not {args.budget!r}", "e.g. --budget 10m")
    runs = RELIABILITY_RUNS if args.runs is None else args.runs
    if runs < 1:
        raise BadInput(f"--runs must be a whole number >= 1, not {args.runs}")
    share = MEMORY_SHARE if args.memory_share is None else args.memory_share
    if not 0 < share <= 1:
        raise BadInput(f"--memory-share must be in (0, 1], not {args.memory_share}")
    src = Path(args.run)
    names = {"engine_lib": args.engine_lib, "model": args.model, "plugins": args.plugin, "mnn_build": args.mnn_build}
    if is_bundle(src):
        from soak.outputs.bundle import open_bundle

        out = Path(args.out) if args.out else src.with_name(src.name.removesuffix(".tar.gz").removesuffix(".tgz")
                                                            + "-repro")
        with tempfile.TemporaryDirectory(prefix="soak-repro-bundle-") as tmp:
            run_dir, _ = open_bundle(src, tmp)
            return _reproduce(args, run_dir, out, str(src), budget, runs, share, names, True)
    if src.is_file():
        raise BadInput(f"{src} is neither a run folder nor a bundle (.tar.gz)",
                       "pass logs/<run-id> or a file written by `soak bundle`")
    from soak import run_folder

    run_dir = run_folder.require(src)
    out = Path(args.out) if args.out else run_dir / run_folder.REPRO
    return _reproduce(args, run_dir, out, str(run_dir), budget, runs, share, names, False)


def _reproduce(args, run_dir: Path, out: Path, source: str, budget: float, runs: int, share: float,
               names: dict, stranger: bool) -> int:
    from soak.loop.console import ReproDisplay
    from soak.repro import base_config, candidate_config, cause_key, pick_cause, reproduce
    from soak.outputs.repro_files import cause_dir_name, write_repro

    cause = pick_cause(run_dir, args.cause)
    cfg = base_config(run_dir, stranger, **names)
    key = cause_key(cause)
    out.mkdir(parents=True, exist_ok=True)
    folder = out / cause_dir_name(key)
    display = ReproDisplay(quiet=args.quiet or args.json)
    display.start([f"soak repro {source}", f"  cause {key}: {cause.get('title') or cause.get('signature_text')}",
                   f"  budget {args.budget}, {runs} reliability runs, output {folder}"])
    try:
        result = reproduce(run_dir, cause, folder, budget, runs, share, display, cfg)
    finally:
        display.done([])
    command = "soak repro " + " ".join(shlex.quote(a) for a in [source, "--cause", key, "--budget", args.budget])
    folder = write_repro(out, result, candidate_config(result), source, command)
    rel = result.final
    lines = [f"soak repro: {key}: {result.stopped}",
             f"  minimal: {result.best.size_text()} (window: {result.window.size_text()})",
             f"  reliability: {rel.recurred} of {rel.attempts}" if rel else "  reliability: -",
             f"  {result.runs} runs in {result.elapsed_s:.1f} s",
             f"  written: {folder}  (soak replay {folder})"]
    lines += [f"  learnt: {f}" for f in result.facts]
    if args.json:
        print(json.dumps({"cause": key, "stopped": result.stopped, "folder": str(folder),
                          "reliability": [rel.recurred, rel.attempts] if rel else None,
                          "minimal": result.best.size(), "window": result.window.size(),
                          "runs": result.runs, "elapsed_s": round(result.elapsed_s, 3)}, indent=2))
    else:
        print("\n".join(lines))
    if result.stopped == "not reproduced":
        return int(ExitCode.FAILED)
    return int(ExitCode.OK)

"""soak replay: re-run the recorded prompts of an iteration; did the fault come back?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from soak.errors import ExitCode


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN|BUNDLE|REPRO", help="run folder (logs/<run-id>), a bundle .tar.gz from "
                   "`soak bundle`, or a reproducer of `soak repro` (RUN/repro/<cause>)")
    p.add_argument("--iteration", "-i", type=int, metavar="N",
                   help="iteration to replay (required for a run folder; a bundle's default: its first failing iteration)")
    p.add_argument("--out", metavar="DIR", help="where the replay run goes (default: beside RUN; logs/ for a bundle)")
    p.add_argument("--engine-lib", metavar="PATH", help="use this engine library instead of the recorded one "
                   "(a bundle's own is never loaded: --engine lib bundles need it)")
    p.add_argument("--plugin", action="append", default=[], metavar="PATH",
                   help="backend plugin to load before the engine (a bundle's are never loaded; repeatable)")
    p.add_argument("--mnn-build", metavar="DIR", help="hand-built MNN for a --engine mnn run (default $SOAK_MNN_BUILD)")
    p.add_argument("--model", metavar="PATH", help="use this model instead of the recorded one (a bundle's "
                   "path is the sender's: --engine lib and mnn bundles need it)")
    p.add_argument("--dry-run", action="store_true",
                   help="say what the replay would load and what it leaves out of the bundle, and stop")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args: argparse.Namespace) -> int:
    from soak.outputs.replay_source import is_bundle_folder, replay_source, replay_verdict
    from soak.judges import judge_run
    from soak.loop.replay import plan_replay, run_replay
    from soak.repro import is_repro_folder

    if is_repro_folder(Path(args.run)):  # `soak repro`'s reproducer: its minimal script, its config
        return _replay_repro(args)
    with replay_source(args.run, args.iteration) as (run_dir, iteration, from_bundle):
        plan = plan_replay(run_dir, iteration, args.out or ("logs" if from_bundle else None), quiet=args.json,
                           engine_lib=args.engine_lib, model=args.model, plugins=args.plugin,
                           mnn_build=args.mnn_build, from_stranger=from_bundle or is_bundle_folder(run_dir))
        if from_bundle:
            plan.run_dir = Path(args.run)
        # before anything is loaded: what will be (stderr, so that --json stays one document)
        print("\n".join(plan.describe()), file=sys.stderr, flush=True)
        if args.dry_run:
            return int(ExitCode.OK)
        result, verdict = run_replay(plan)
        judge_run(result, plan.cfg.quiet)
        verdict.update(replay_verdict(run_dir, iteration, verdict["replay_run"]))
        verdict["run"] = str(args.run)
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        state = ("REPRODUCED" if verdict["reproduced"] else
                 "clean in both runs" if verdict["clean_both"] else "NOT reproduced")
        print(f"\nreplay of iteration {verdict['iteration']} ({verdict['turns_replayed']} turns): {state}")
        for label, found in (("original", verdict["original_faults"]), ("replayed", verdict["replayed_faults"])):
            print(f"  {label} faults: " + ("; ".join(f"{sig} {text}" for sig, text in sorted(found.items()))
                                          or "none"))
        print(f"  replay run: {verdict['replay_run']}")
    return int(ExitCode.OK if verdict["reproduced"] or verdict["clean_both"] else ExitCode.FAILED)


def _replay_repro(args: argparse.Namespace) -> int:
    from soak.repro import replay_repro

    verdict = replay_repro(Path(args.run), args.out, quiet=args.json)
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        state = "REPRODUCED" if verdict["reproduced"] else "NOT reproduced"
        print(f"\nreplay of the reproducer of {verdict['cause']} ({verdict['turns_replayed']} turns): {state}")
        print(f"  replay run: {verdict['replay_run']}")
    return int(ExitCode.OK if verdict["reproduced"] else ExitCode.FAILED)

"""soak replay: re-run the recorded prompts of an iteration; did the fault come back?"""

from __future__ import annotations

import argparse
import json

from soak.errors import ExitCode

HELP = "replay the recorded prompts that led to an iteration and check the fault reappears"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder (logs/<run-id>)")
    p.add_argument("--iteration", "-i", type=int, required=True, metavar="N", help="iteration to replay")
    p.add_argument("--out", metavar="DIR", help="where the replay run goes (default: beside RUN)")
    p.add_argument("--engine-lib", metavar="PATH", help="use this engine library instead of the recorded one")
    p.add_argument("--model", metavar="PATH", help="use this model instead of the recorded one")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args: argparse.Namespace) -> int:
    from soak.replay import replay

    _, verdict = replay(args.run, args.iteration, args.out, quiet=args.json,
                        engine_lib=args.engine_lib, model=args.model)
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        state = ("REPRODUCED" if verdict["reproduced"] else
                 "clean in both runs" if verdict["clean_both"] else "NOT reproduced")
        print(f"\nreplay of iteration {verdict['iteration']} ({verdict['turns_replayed']} turns): {state}")
        print(f"  original faults: {verdict['original_faults']}")
        print(f"  replayed faults: {verdict['replayed_faults']}")
        print(f"  replay run: {verdict['replay_run']}")
    return int(ExitCode.OK if verdict["reproduced"] or verdict["clean_both"] else ExitCode.FAILED)

"""soak reference: the seeded workload, greedy, on an oracle engine; its turns become a reference.

It is a soak run (a run folder with its events, manifest and engine.log) whose turns go through the
`reference` worker command: each turn's exact input ids, and per generated step the oracle's top-k
ids with log-probabilities and the log-sum-exp, streamed to <run>/reference.jsonl.  `soak run
--reference <run>` then teacher-forces the same turns through another engine or backend and compares
every step's logits.  The reference is keyed by the model's files, the workload seed and options and
soak's version: a run with another key is refused.
"""

from __future__ import annotations

import argparse

from soak.commands import run as run_command
from soak.run_folder import REFERENCE

DESCRIPTION = f"""Make a wrong-answer reference (writes <run>/{REFERENCE}).

The oracle defaults to the same model on the CPU at precision high (fp32). For a phone run, make the
reference on the host with the model the phone runs.

Examples:
  soak reference --model soak/models/qwen2-tiny --seed 7 --iterations 200
  soak run --engine mnn --backend opencl --model soak/models/qwen2-tiny --seed 7 --iterations 200 \\
           --reference logs/<reference-run>
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    run_command.add_arguments(p)
    p.add_argument("--oracle-topk", type=int, default=10, metavar="K",
                   help="ids kept per step, with their log-probabilities (default 10: about 120 bytes a step)")
    p.set_defaults(make_reference=True, precision=None)


def run(args: argparse.Namespace) -> int:
    if args.reference:
        from soak import errors

        raise errors.BadInput("soak reference makes a reference; --reference is for soak run",
                              "drop --reference")
    if args.precision is None and (args.backend or "cpu") == "cpu":
        args.precision = "high"          # the oracle: fp32
    return run_command.run(args)

"""soak bundle: one .tar.gz bug report for a fault of a run."""

from __future__ import annotations

import argparse

DESCRIPTION = """

The bundle holds a README (what failed, how often, on what, the command that
replays it), the manifest and environment (OpenCL device and driver, host or
phone, library hashes, model config), the classification and verdicts, the
events and engine-log windows around each occurrence, interposer records,
memory and perf series, the exact prompts of the failing iterations and of
those before them, and the seed.

Examples:
  soak bundle logs/RUN                            # every fault of the run
  soak bundle logs/RUN --fault soak-out-of-resources -o oor.tar.gz
  soak bundle logs/RUN --fault sig-ceaee2c3f821 --redact-serials
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder (logs/<run-id>)")
    p.add_argument("--fault", metavar="ID|SIGNATURE", help="only this fault id (catalog) or signature (sig-...)")
    p.add_argument("--redact-prompts", action="store_true",
                   help="replace prompts and outputs by their length and hash (the bundle then cannot replay)")
    p.add_argument("--redact-serials", action="store_true", help="replace device serial numbers by a hash")
    p.add_argument("-o", "--output", metavar="FILE", help="bundle path (default: ./soak-bundle-<run-id>.tar.gz)")


def run(args: argparse.Namespace) -> int:
    from soak.outputs.bundle import make_bundle

    path = make_bundle(args.run, fault=args.fault, out=args.output,
                       redact_prompts=args.redact_prompts, redact_serials=args.redact_serials)
    print(f"bundle written: {path}")
    return 0

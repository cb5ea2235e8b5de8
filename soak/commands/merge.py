"""soak merge: every run folder of a night -> one table of findings, one HTML report, one JUnit."""

from __future__ import annotations

import argparse
import sys

from soak.run_folder import CLASSIFICATION, MERGE_TABLE

DESCRIPTION = f"""
Reads each run's {CLASSIFICATION} (written at the run's end; a run
without one is classified now, its folder left as it is) and writes into -o DIR:

  {MERGE_TABLE:<20}  each finding once, with per-device counts (device = phone
                        model and serial from the manifest, or the host)
  report.html           findings x devices, devices, runs with end reasons and links
  junit.xml             one testsuite per run (run id, device, model in its name),
                        from the run's gate results when it was gated, else its findings

  soak merge artifacts/ -o night/                       every run folder below artifacts/
  soak merge logs/run-a logs/run-b -o night/ --history logs/history.sqlite

Exit codes: 0 merged (faults or not: a gate judges), 3 bad input.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_OR_DIR", help="run folders, or folders holding run folders")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="folder for the merged outputs")
    p.add_argument("--catalog", metavar="DIR", help=f"catalog for runs without {CLASSIFICATION} "
                   "(default: fault_catalog/ of this checkout)")
    p.add_argument("--history", metavar="DB", help="also add every run to this history database (soak history)")
    p.add_argument("--quiet", action="store_true", help="print only where the outputs went")


def run(args: argparse.Namespace) -> int:
    from soak.outputs.merge import JUNIT_NAME, REPORT_NAME, TABLE_NAME, merge

    result = merge(args.runs, args.output, catalog=args.catalog, history_db=args.history)
    if not args.quiet:
        print(result.table.text())
    out = result.out_dir
    print(f"\nwritten: {out / TABLE_NAME}, {out / REPORT_NAME}, {out / JUNIT_NAME}"
          + (f"; {result.history_added} run(s) added to {args.history}" if args.history else ""),
          file=sys.stdout)
    return 0

"""soak report: one self-contained HTML report of one or several runs."""

from __future__ import annotations

import argparse

DESCRIPTION = """

Examples:
  soak report logs/RUN -o report.html
  soak report logs/CPU_RUN logs/OPENCL_RUN -o cpu-vs-opencl.html     # compared against the first
  soak report logs/TONIGHT --baseline logs/LAST_GOOD -o nightly.html
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) (logs/<run-id>)")
    p.add_argument("-o", "--output", metavar="FILE", default="report.html", help="HTML file (default: report.html)")
    p.add_argument("--baseline", metavar="RUN", help="compare every run against this run")


def run(args: argparse.Namespace) -> int:
    from soak.outputs.report import write_report

    path = write_report(args.runs, args.output, args.baseline)
    print(f"report written: {path}")
    return 0

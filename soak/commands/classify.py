"""`soak classify RUN [RUN...|DIR]`: match a run's failures against the catalog."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from soak.catalog import _table
from soak.catalog.classify import FARM_OUTPUT_NAME, OUTPUT_NAME, classify_many, classify_run, find_runs, is_run_dir, resolve_catalog
from soak.errors import BadInput

DESCRIPTION = """\
Reads only the run folder (manifest.json, events.jsonl, engine.log), groups
identical failures into findings with first/last iteration and counts, and
matches each against the fault catalog with the run's context (model size,
backend, GPU, driver, versions). Prints a table and writes classification.json
into each run folder. Failures nothing matches get a stable signature.

  soak classify logs/<run-id>
  soak classify logs/            every run below; one table of distinct faults
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s), or a folder of runs")
    parser.add_argument("--catalog", metavar="DIR", help="catalog folder (default: fault_catalog/ of this checkout)")
    parser.add_argument("--json", action="store_true", help="print the classification as JSON")


def run(args: argparse.Namespace) -> int:
    runs: list[Path] = []
    for arg in args.runs:
        p = Path(arg)
        if not p.exists():
            raise BadInput(f"{p} does not exist", hint="give a run folder (logs/<run-id>) or a folder of runs")
        if not p.is_dir():
            raise BadInput(f"{p} is not a folder", hint="give a run folder (logs/<run-id>) or a folder of runs")
        found = [p] if is_run_dir(p) else find_runs(p)
        if not found:
            raise BadInput(f"no run folders in {p}",
                           hint="a run folder holds events.jsonl, manifest.json or engine.log")
        runs.extend(found)
    catalog = resolve_catalog(args.catalog)
    if catalog.note:
        print(f"soak: warning: {catalog.note}", file=sys.stderr)
    if len(runs) == 1:
        result = classify_run(runs[0], catalog)
        if args.json:
            print(json.dumps(result, indent=1, ensure_ascii=False, default=str))
        else:
            _print_run(result)
        return 0
    single_farm = len(args.runs) == 1 and not is_run_dir(Path(args.runs[0]))
    farm = classify_many(Path(args.runs[0]) if single_farm else runs, catalog)
    if args.json:
        farm = {k: v for k, v in farm.items() if k != "results"}
        print(json.dumps(farm, indent=1, ensure_ascii=False, default=str))
        return 0
    print(f"{len(runs)} runs, {len(farm['faults'])} distinct faults")
    print(_table.farm_table(farm) if farm["faults"] else "no failures")
    print(f"\nclassification.json written in each of the {len(runs)} run folders"
          + (f"; the table in {Path(args.runs[0]) / FARM_OUTPUT_NAME}" if single_farm else ""))
    return 0


def _print_run(result: dict) -> None:
    ctx = result["context"]
    bits = [f"model {ctx.get('model_params_human') or '?'} {ctx.get('model_family') or ''}".rstrip(),
            f"backend {ctx.get('backend') or '?'}->{ctx.get('backend_actual') or '?'}",
            f"GPU {ctx.get('gpu_model') or '?'}", f"MNN {ctx.get('mnn_version') or '?'}", f"OS {ctx.get('os') or '?'}"]
    print(f"run {result['run_id']}: " + ", ".join(bits))
    s = result["summary"]
    print(f"{s['findings']} findings ({s['known']} known, {s['unknown']} new) from "
          f"{result['fault_events']} fault events; catalog {result['catalog']['entries']} entries")
    if result["findings"]:
        print(_table.findings_table(result))
        near = _table.near_miss_lines(result)
        if near:
            print("\nnear misses (symptom matches, context does not):")
            print("\n".join(near))
    if result["context_unknown"]:
        print(f"\ncontext unknown (entries needing it matched without it): {', '.join(result['context_unknown'])}")
    print(f"\nwritten: {Path(result['run_dir']) / OUTPUT_NAME}")

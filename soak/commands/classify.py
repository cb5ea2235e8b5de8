"""`soak classify RUN [RUN...|DIR|LOG]`: match a run's failures against the catalog."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soak.catalog import table
from soak.catalog.classify import (FARM_OUTPUT_NAME, OUTPUT_NAME, classify_log, classify_many, classify_run, find_runs,
                                   is_run_dir, resolve_catalog)
from soak.diagnostics import get_logger
from soak.errors import BadInput
from soak.run_folder import CLASSIFICATION, ENGINE_LOG, EVENTS, MANIFEST

DESCRIPTION = f"""\
Reads only the run folder ({MANIFEST}, {EVENTS}, {ENGINE_LOG}), groups
identical failures into findings, matches each against the fault catalog with
the run's context (model size, backend, GPU, driver, versions), and orders
them into root causes: the first row is the earliest cause, what followed
from it (its cascade) is counted beneath it. Prints the table and writes
{CLASSIFICATION} into each run folder. Failures nothing matches get a
stable signature.

  soak classify logs/<run-id>
  soak classify logs/            every run below; one table of distinct faults
  soak classify llm_demo.txt     a log soak did not record: llm_demo/llm_bench
                                 output, a logcat dump, an adb bugreport
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run folder(s), a folder of runs, or an engine log file (llm_demo, logcat, bugreport)")
    parser.add_argument("--catalog", metavar="DIR", help="catalog folder (default: fault_catalog/ of this checkout)")
    parser.add_argument("--json", action="store_true", help="print the classification as JSON")


def run(args: argparse.Namespace) -> int:
    runs: list[Path] = []
    logs = [Path(a) for a in args.runs if Path(a).is_file()]
    if logs:
        if len(logs) != len(args.runs):
            raise BadInput("give either log files or run folders, not both",
                           hint="soak classify LOG [LOG...]  or  soak classify RUN [RUN...]")
        catalog = resolve_catalog(args.catalog)
        results = [classify_log(p, catalog) for p in logs]
        if args.json:
            print(json.dumps(results[0] if len(results) == 1 else results, indent=1, ensure_ascii=False, default=str))
            return 0
        for n, result in enumerate(results):
            if n:
                print()
            _print_run(result)
        return 0
    for arg in args.runs:
        p = Path(arg)
        if not p.exists():
            raise BadInput(f"{p} does not exist", hint="give a run folder (logs/<run-id>), a folder of runs or a log file")
        if not p.is_dir():
            raise BadInput(f"{p} is not a folder or a file", hint="give a run folder (logs/<run-id>) or a log file")
        found = [p] if is_run_dir(p) else find_runs(p)
        if not found:
            raise BadInput(f"no run folders in {p}",
                           hint=f"a run folder holds {EVENTS}, {MANIFEST} or {ENGINE_LOG}")
        runs.extend(found)
    catalog = resolve_catalog(args.catalog)
    if catalog.note:
        get_logger(__name__).warning(catalog.note)
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
    print(table.farm_table(farm) if farm["faults"] else "no failures")
    print(f"\n{CLASSIFICATION} written in each of the {len(runs)} run folders"
          + (f"; the table in {Path(args.runs[0]) / FARM_OUTPUT_NAME}" if single_farm else ""))
    return 0


def _print_run(result: dict) -> None:
    ctx = result["context"]
    log = result.get("log")
    model = ctx.get("model_name") if log else f"{ctx.get('model_params_human') or '?'} {ctx.get('model_family') or ''}"
    bits = [f"model {model or '?'}".rstrip(),
            f"backend {ctx.get('backend') or '?'}->{ctx.get('backend_actual') or '?'}",
            f"GPU {ctx.get('gpu_model') or ctx.get('gpu_vendor') or '?'}", f"MNN {ctx.get('mnn_version') or '?'}",
            f"OS {ctx.get('os') or '?'}"]
    if log:
        print(f"log {result['run_dir']} ({log['format']}, {log['lines']} lines, {log['engine_lines']} from the engine): "
              + ", ".join(bits))
        print("could not read from the log: " + (", ".join(log["context_missing"]) or "nothing missing"))
    else:
        print(f"run {result['run_id']}: " + ", ".join(bits))
    s = result["summary"]
    injected = sum(1 for c in result["causes"] if c["injected"])
    known = sum(1 for c in result["causes"] if c["known"])
    print(f"{s['causes']} root causes ({known} known, {s['new']} new"
          + (f", {injected} injected" if injected else "") + f") from {s['findings']} findings, "
          f"{result['fault_events']} fault events"
          + (f"; {s['benign']} benign probes" if s["benign"] else "")
          + f"; catalog {result['catalog']['entries']} entries")
    if result["causes"]:
        print(table.causes_table(result))
        near = table.near_miss_lines(result)
        if near:
            print("\nnear misses (symptom matches, context does not):")
            print("\n".join(near))
    if result["context_unknown"] and not log:
        print(f"\ncontext unknown (entries needing it matched without it): {', '.join(result['context_unknown'])}")
    if not log:
        print(f"\nwritten: {Path(result['run_dir']) / OUTPUT_NAME}")

"""soak history: night-to-night findings in one SQLite file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soak import history
from soak.catalog.classify import find_runs, is_run_dir
from soak.errors import BadInput

DESCRIPTION = """
Store each night's findings, then ask what changed:

  soak history add logs/*                 store runs (folders, or a folder of run folders)
  soak history                            every finding: first/last seen, runs, devices
  soak history new [--window 24]          what is new in the latest night
  soak history since KEY                  since which MNN build KEY shows up
  soak history drivers KEY                on which GPU drivers KEY shows up, and where it never did

KEY is a catalog id (e.g. mnn-adreno-map-error) or a signature (sig-...).
The database is one file (default logs/history.sqlite, or --db / $SOAK_HISTORY);
parallel CI jobs can add to it at the same time.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="FILE", default=None,
                        help="history database (default: $SOAK_HISTORY or logs/history.sqlite)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    sub = parser.add_subparsers(dest="question", metavar="QUESTION")
    add = sub.add_parser("add", help="store run folders")
    add.add_argument("runs", nargs="+", metavar="RUN")
    new = sub.add_parser("new", help="findings new in the latest night")
    new.add_argument("--window", type=float, default=24.0, metavar="HOURS",
                     help="the latest night: this many hours up to the newest run (default 24)")
    for name, what in (("since", "since which MNN build a finding shows up"),
                       ("drivers", "on which GPU drivers a finding shows up")):
        p = sub.add_parser(name, help=what)
        p.add_argument("key", metavar="KEY")


def _db_path(args: argparse.Namespace) -> Path:
    import os

    return Path(args.db or os.environ.get("SOAK_HISTORY") or history.DEFAULT_DB)


def _run_dirs(paths: list[str]) -> list[Path]:
    dirs: list[Path] = []
    for text in paths:
        path = Path(text)
        if is_run_dir(path):
            dirs.append(path)
        elif path.is_dir() and find_runs(path):
            dirs.extend(find_runs(path))
        else:
            raise BadInput(f"{path} is not a run folder and holds none",
                           "pass folders written by `soak run` (or a folder of them)")
    return dirs


def run(args: argparse.Namespace) -> int:
    conn = history.connect(_db_path(args))
    try:
        if args.question == "add":
            added = history.add_runs(conn, _run_dirs(args.runs))
            result = {"db": str(_db_path(args)), "added": [a.__dict__ for a in added]}
            text = "\n".join(f"{'replaced' if a.replaced else 'added'} {a.run_id}: {a.findings} finding(s)"
                             for a in added)
        elif args.question == "new":
            result = history.new_findings(conn, args.window)
            text = _new_text(result)
        elif args.question == "since":
            result = history.since_build(conn, args.key)
            text = _since_text(result)
        elif args.question == "drivers":
            result = history.by_driver(conn, args.key)
            text = _drivers_text(result)
        else:
            result = {"findings": history.findings(conn)}
            text = _list_text(result["findings"])
    finally:
        conn.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(text)
    return 0


def _list_text(rows: list[dict]) -> str:
    if not rows:
        return "no findings stored yet: soak history add RUN..."
    out = [f"{'finding':34} {'sev':8} {'first seen':20} {'last seen':20} {'runs':>4} {'count':>7}  devices"]
    for r in rows:
        out.append(f"{r['key'][:34]:34} {(r['severity'] or '-')[:8]:8} {(r['first_seen'] or '-')[:19]:20} "
                   f"{(r['last_seen'] or '-')[:19]:20} {r['runs']:>4} {r['count']:>7}  {', '.join(r['devices'])}")
    return "\n".join(out)


def _new_text(result: dict) -> str:
    if result["night_start"] is None:
        return "no runs stored yet: soak history add RUN..."
    head = f"latest night: {result['runs']} run(s) after {result['night_start'][:19]}"
    if not result["new"]:
        return head + "\nnothing new tonight"
    lines = [head, f"{len(result['new'])} new finding(s):"]
    for r in result["new"]:
        lines.append(f"  {r['key']}  {r['title'] or ''}  ({r['count']}x in {r['runs']} run(s) on "
                     f"{', '.join(r['devices']) or '?'})")
    return "\n".join(lines)


def _since_text(result: dict) -> str:
    lines = [f"{result['key']}: first seen with MNN {result['first_bad'] or '?'}"
             + (f", last clean build {result['last_good']}" if result["last_good"] else ", no clean build before it")]
    for v in result["versions"]:
        lines.append(f"  MNN {v['mnn_version']:16} {v['with_finding']}/{v['runs']} run(s) with it")
    return "\n".join(lines)


def _drivers_text(result: dict) -> str:
    lines = [f"{result['key']}:"]
    for title, rows in (("seen on", result["affected"]), ("never on", result["clean"])):
        for d in rows:
            lines.append(f"  {title:9} {d['gpu']} driver {d['driver']}: {d['with_finding']}/{d['runs']} run(s)"
                         f" ({', '.join(d['devices'])})")
    return "\n".join(lines)


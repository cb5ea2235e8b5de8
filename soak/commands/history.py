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
  soak history status [KEY]               the lab's labels per cause: new, regressed, flaky, open,
                                          not seen lately, fixed; nights seen / run; ranges; repro
  soak history html -o DIR                the dashboard: a static site (no server, no network)

A cause is `fixed` only after --fixed-after N clean nights (default 7) on the benches
(device, model, backend, workload) that had it; one that merely stopped showing up is
`not seen lately`.  It is `flaky` when seen on fewer than --flaky-below (default 0.8) of
the nights its configurations ran, or when `soak gate --rerun-unexpected` labelled it so.

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
    for name, what in (("status", "the lab's labels per cause (KEY: one cause, in full)"),
                       ("html", "write the dashboard (a static site) to -o DIR")):
        p = sub.add_parser(name, help=what)
        if name == "status":
            p.add_argument("key", metavar="KEY", nargs="?")
        else:
            p.add_argument("-o", "--out", metavar="DIR", required=True, help="the site's folder (created)")
        p.add_argument("--fixed-after", type=int, default=history.FIXED_AFTER, metavar="N",
                       help=f"clean nights before a cause is fixed (default {history.FIXED_AFTER})")
        p.add_argument("--flaky-below", type=float, default=history.FLAKY_BELOW, metavar="SHARE",
                       help=f"reliability below which a cause is flaky (default {history.FLAKY_BELOW})")
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
        elif args.question in ("status", "html"):
            if args.fixed_after < 1 or not 0 <= args.flaky_below <= 1:
                raise BadInput("--fixed-after must be >= 1 and --flaky-below between 0 and 1",
                               "e.g. --fixed-after 7 --flaky-below 0.8")
            if args.question == "html":
                from soak.outputs.dashboard import INDEX, write_site

                view = write_site(conn, args.out, args.fixed_after, args.flaky_below)
                result = {"site": str(Path(args.out) / INDEX), "causes": len(view["causes"]),
                          "counts": view["counts"], "nights": len(view["nights"]), "runs": view["runs"]}
                text = (f"dashboard written: {result['site']} ({result['causes']} causes over {result['nights']} "
                        "nights: " + ", ".join(f"{v} {k}" for k, v in view["counts"].items() if v) + ")")
            else:
                view = history.lab(conn, args.fixed_after, args.flaky_below)
                if args.key:
                    _require = [c for c in view["causes"] if c["key"] == args.key]
                    if not _require:
                        raise BadInput(f"no finding {args.key!r} in the history",
                                       "`soak history status` lists the keys")
                    result, text = _require[0], _cause_text(_require[0])
                else:
                    result, text = view, _status_text(view)
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



def _range(rng: dict | None) -> str:
    if not rng:
        return "-"
    return ", ".join(f"{'build' if k == 'build' else 'driver'} {rng['from'][k]} -> {rng['to'][k]}"
                     for k in rng["changed"])


def _status_text(view: dict) -> str:
    if not view["causes"]:
        return "no findings stored yet: soak history add RUN..."
    out = [f"{len(view['nights'])} nights ({view['nights'][0]} .. {view['latest_night']}), {view['runs']} runs: "
           + ", ".join(f"{v} {k}" for k, v in view["counts"].items() if v),
           f"{'status':16} {'cause':34} {'first':10} {'last':10} {'seen/run':>9}  range"]
    for c in view["causes"]:
        rng = (f"fixed {_range(c['fix'])}" if c["fix"] else
               f"since {_range(c['regression'])}" if c["regression"] else "-")
        out.append(f"{c['status']:16} {c['key'][:34]:34} {c['first_night']:10} {c['last_night']:10} "
                   f"{str(c['nights_seen']) + '/' + str(c['nights_run']):>9}  {rng}")
    return "\n".join(out)


def _cause_text(c: dict) -> str:
    rep = c["repro"]
    return "\n".join([
        f"{c['key']}: {c['status']}  ({c['title'] or ''})",
        f"  first night {c['first_night']}, last night {c['last_night']}, "
        f"clean nights since {c['clean_nights_after']}",
        f"  nights seen {c['nights_seen']} of {c['nights_run']} run on its configurations"
        + (f" ({100 * c['reliability']:.0f}%)" if c["reliability"] is not None else ""),
        f"  regression range: {_range(c['regression'])}"
        + (f" (first bad night {c['regression']['to']['night']})" if c["regression"] else ""),
        f"  fix range: {_range(c['fix'])}" + (f" (first good night {c['fix']['to']['night']})" if c["fix"] else ""),
        f"  devices: {', '.join(c['devices'])}",
        "  repro: " + (f"{rep['reproduced']}/{rep['attempts']} attempts reproduced it" if rep else "none"),
    ])

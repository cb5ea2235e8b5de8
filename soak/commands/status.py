"""soak status: how a run is going, from another terminal (or after it ended)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from soak import errors
from soak.run_folder import EVENTS, MANIFEST

DESCRIPTION = f"""
Reads the run folder only ({EVENTS}, {MANIFEST}): works while `soak run` is
writing it, from another terminal or machine sharing the folder.  Shows the state
(running, complete, or ended without run_end: killed), iterations and percentage of a
bounded run, time left, faults so far (counted as the gate counts them) with the last
few, the teacher-forced turns checked and found wrong so far (runs with --reference), and the memory
verdict of each series so far (soak.analysis.memory_verdict: the same
judgment `soak gate` and `soak classify` give), with RSS's trend per hour.

  soak status logs/nightly
  soak status logs/nightly --watch        # refresh every 2 s until the run ends
  soak status logs/nightly --json

Exit codes: 0 shown, 3 not a run folder.
"""

from soak.run_folder import COMPLETE, RUNNING


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder (logs/<run-id>)")
    p.add_argument("--watch", nargs="?", const=2.0, type=float, metavar="S",
                   help="refresh every S seconds (default 2) until the run ends; Ctrl-C to stop")
    p.add_argument("--json", action="store_true", help="print the status as JSON")


def status(run_dir) -> dict:
    from soak.run_folder import DamagedFile, read_events, read_manifest, state as run_state
    from soak.fault_kinds import fault_kind_of
    from soak.fault_kinds import fault_detail
    from soak.analysis.oracle_verdict import OracleTally

    run_dir = Path(run_dir)
    if not (run_dir / EVENTS).is_file():
        raise errors.BadInput(f"{run_dir} is not a run folder (no {EVENTS})",
                              "give the folder `soak run` printed at its start (logs/<run-id>)")
    try:
        manifest = read_manifest(run_dir) or {}  # a newer major schema: BadInput (exit 3)
    except DamagedFile:
        manifest = {}
    config = manifest.get("config") or {}
    events = list(read_events(run_dir))
    state = run_state(run_dir)  # running: its writer holds the folder's lock
    iterations, elapsed, faults, by_kind = 0, 0.0, [], {}
    oracle = OracleTally()
    for e in events:
        elapsed = max(elapsed, e.get("t") or 0.0)
        name = e.get("event")
        if name == "oracle_turn":
            oracle.add(e)
        if name == "iteration" and isinstance(e.get("i"), int):
            iterations = max(iterations, e["i"] + 1)
        kind = fault_kind_of(name, e)
        if kind is not None:
            by_kind[kind] = by_kind.get(kind, 0) + 1
            faults.append({"iteration": e.get("iteration"), "kind": kind, "detail": fault_detail(kind, e)})
    if state == RUNNING:  # the clock goes on since the last event written
        elapsed += max(0.0, time.time() - (run_dir / EVENTS).stat().st_mtime)
    total, duration = config.get("iterations"), config.get("duration_s")
    frac = left = None
    rate = iterations / elapsed if elapsed > 0 and iterations else None
    if total:
        frac = min(1.0, iterations / total)
        left = (total - iterations) / rate if rate else None
    if duration:
        frac = max(frac or 0.0, min(1.0, elapsed / duration))
        left = max(0.0, duration - elapsed) if left is None else min(left, max(0.0, duration - elapsed))
    if state != RUNNING:
        left = 0.0 if state == COMPLETE else None
    return {"run_id": manifest.get("run_id") or run_dir.name, "run_dir": str(run_dir), "state": state,
            "seed": manifest.get("seed", config.get("seed")), "engine": manifest.get("engine"),
            "backend": manifest.get("backend"), "iterations": iterations, "iterations_goal": total,
            "duration_goal_s": duration, "elapsed_s": round(elapsed, 3), "fraction": frac,
            "time_left_s": None if left is None else round(left, 1), "rate_per_s": rate,
            "faults": len(faults), "faults_by_kind": by_kind, "last_faults": faults[-5:],
            "oracle": _oracle_status(manifest, oracle), "memory": memory_status(run_dir)}


def _oracle_status(manifest: dict, tally) -> dict | None:
    """The teacher-forced turns so far; None for a run without --reference (and `soak reference`'s own)."""
    info = manifest.get("oracle") if isinstance(manifest.get("oracle"), dict) else None
    if (info is None and not tally.checked) or (info or {}).get("mode") == "make":
        return None
    return {"checked": tally.checked, "wrong": tally.wrong, "nonfinite": tally.nonfinite,
            "first_wrong_iteration": tally.first_wrong, "first_nonfinite_iteration": tally.first_nonfinite,
            "every": (info or {}).get("every")}


def memory_status(run_dir: Path) -> dict:
    """The memory verdicts of the events so far, from soak.analysis.memory_verdict (the one
    memory judgment: `soak gate` and `soak classify` read the same), with RSS's figures."""
    from soak.analysis.memory_verdict import memory_verdicts
    from soak.analysis.loaded_run import RunFolder

    run = RunFolder(run_dir)
    series = memory_verdicts(run)["series"]
    rss = [e["rss"] for _, e in run.memory_samples if isinstance(e.get("rss"), (int, float))]
    v = series["rss"]
    hour = v.get("slope_per_hour") or {}
    return {"verdicts": {k: s["verdict"] for k, s in series.items() if s["verdict"] != "no_data"},
            "verdict": v["verdict"], "samples": v.get("samples", 0),
            "rss_first": rss[0] if rss else None, "rss_last": rss[-1] if rss else None,
            "slope_bytes_per_hour": None if hour.get("value") is None else round(hour["value"]),
            "slope_bytes_per_hour_interval": [hour.get("lo"), hour.get("hi")] if hour else None,
            "iterations": v.get("iterations")}


def render(st: dict) -> str:
    from soak.loop.console import human_bytes, human_duration

    goal = f"/{st['iterations_goal']}" if st["iterations_goal"] else ""
    pct = f" ({st['fraction'] * 100:.0f}%)" if st["fraction"] is not None else ""
    lines = [f"run      {st['run_id']}  ({st['engine']} on {st['backend']}, seed {st['seed']})",
             f"folder   {st['run_dir']}",
             f"state    {st['state']}",
             f"progress {st['iterations']}{goal} iterations{pct} in {human_duration(st['elapsed_s'])}"
             + (f", {st['rate_per_s']:.2f} it/s" if st["rate_per_s"] else "")]
    if st["time_left_s"] is not None and st["state"] == RUNNING:
        lines.append(f"left     {human_duration(st['time_left_s'])}")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(st["faults_by_kind"].items()))
    lines.append(f"faults   {st['faults']}" + (f"  ({kinds})" if kinds else ""))
    for f in st["last_faults"]:
        lines.append(f"         iter {f['iteration']}  {f['kind']}  {f['detail']}")
    o = st.get("oracle")
    if o is not None:
        firsts = [f"first wrong at iteration {o['first_wrong_iteration']}" if o["first_wrong_iteration"] is not None
                  else None, f"first non-finite at iteration {o['first_nonfinite_iteration']}"
                  if o["first_nonfinite_iteration"] is not None else None]
        lines.append(f"answers  {o['checked']} turns checked against the reference, {o['wrong']} wrong, "
                     f"{o['nonfinite']} non-finite" + "".join(f"; {x}" for x in firsts if x))
    m = st["memory"]
    others = ", ".join(f"{k} {v}" for k, v in m["verdicts"].items() if k != "rss")
    if m["rss_last"] is None:
        lines.append("memory   no samples yet")
    elif m["slope_bytes_per_hour"] is None:
        lines.append(f"memory   rss {human_bytes(m['rss_last'])}: {m['verdict']} ({m['samples']} samples after warm-up)")
    else:
        sign = "+" if m["slope_bytes_per_hour"] >= 0 else "-"
        lines.append(f"memory   rss {human_bytes(m['rss_first'])} -> {human_bytes(m['rss_last'])}: {m['verdict']}, "
                     f"trend {sign}{human_bytes(abs(m['slope_bytes_per_hour']))}/hour over {m['samples']} samples")
    if others:
        lines.append(f"         {others}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    while True:
        st = status(args.run)
        if args.json:
            print(json.dumps(st, indent=2), flush=True)
        else:
            if args.watch and tty:
                sys.stdout.write("\x1b[H\x1b[2J")  # clear and home
            print(render(st), flush=True)
        if not args.watch or st["state"] != RUNNING:
            return int(errors.ExitCode.OK)
        time.sleep(args.watch)
        if not tty and not args.json:
            print(flush=True)

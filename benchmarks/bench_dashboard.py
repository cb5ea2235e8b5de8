"""Benchmark: the lab's dashboard over 1,000 nights x 50 phones of history (issue 26).

    python benchmarks/bench_dashboard.py [--nights 1000] [--devices 50] [--causes 200] [--keep DIR]

Fills a history database through soak.history.add_run (the code `soak history add` and
`soak merge --history` use), one run per phone per night: each phone has a GPU, a driver that
changes every ~150 nights, a model, and the MNN build of the night (a new one every 30
nights).  CAUSES root causes, each on 1-10 phones for a window of nights, seen on each of its
runs with probability 1, 0.5 or 0.1 (steady, intermittent, rare), 40 of them starting with a
build (regressions), 40 ending with a driver (fixes).  Then, in a fresh process,

    soak history --db DB html -o SITE

and reports its wall time, CPU time and peak RSS (ru_maxrss of the child), the database's
size and the site's.  Targets: <= 30 s and <= 300 MB for the dashboard, <= 200 MB database.
The filling is not timed (about a minute: one transaction a run, as parallel CI jobs add).

Measured 2026-12-07 on this 2-vCPU host shared with other sessions (load average 8.7):
  1,000 nights x 50 phones = 50,000 runs, 200 causes, 155,540 occurrences: dashboard in 4.7 s wall,
  2.0 s CPU, peak RSS 90 MB; database 31 MB; site 8.2 MB (201 pages).
  The same with --causes 1000 (772,481 occurrences): 16.7 s wall, 6.8 s CPU, peak RSS 93 MB;
  database 102 MB; site 40 MB.  Memory does not grow with the causes: history.lab reads the
  occurrences one cause at a time and the dashboard writes each page as it comes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GPUS = [("Adreno 740", "512."), ("Adreno 642L", "512."), ("Mali-G715", "r4"), ("Mali-G710", "r4"),
        ("Immortalis-G720", "r4"), ("Xclipse 940", "2.")]
MODELS = [("qwen2", "0.5B"), ("qwen2", "1.5B"), ("llama3", "1B")]


def _fill(db: Path, nights: int, devices: int, n_causes: int, seed: int = 26) -> dict:
    from soak import history

    rng = random.Random(seed)
    start = date(2024, 1, 1)
    phones = []
    for d in range(devices):
        gpu, prefix = GPUS[d % len(GPUS)]
        phones.append({"model": f"Phone-{d:02d}", "serial": f"SER{d:04d}", "gpu": gpu, "prefix": prefix,
                       "llm": MODELS[d % len(MODELS)], "driver_every": rng.randint(120, 180)})
    causes = []
    for c in range(n_causes):
        on = set(rng.sample(range(devices), rng.randint(1, 10)))
        a = rng.randrange(nights)
        if c < 40:  # regressions: from a build on
            a = (a // 30) * 30
        b = min(nights - 1, a + rng.randint(20, 600))
        causes.append({"on": on, "from": a, "until": b, "p": rng.choice([1.0, 0.5, 0.1]),
                       "record": {"fault_id": f"bench-cause-{c:03d}" if c % 3 else None,
                                  "signature": f"sig-{c:012x}", "title": f"bench cause {c} (kind {c % 7})",
                                  "severity": ("critical", "high", "medium", "low")[c % 4], "known": c % 3 != 0,
                                  "kind": "error_line"}})
    conn = history.connect(db)
    occurrences = 0
    for n in range(nights):
        night = start + timedelta(days=n)
        build = f"3.{n // 300}.{(n // 30) % 10}"
        for d, ph in enumerate(phones):
            found = []
            for c in causes:
                if d in c["on"] and c["from"] <= n <= c["until"] and rng.random() < c["p"]:
                    found.append(dict(c["record"], count=rng.randint(1, 5), first_iteration=rng.randint(1, 500),
                                      last_iteration=600))
            occurrences += len(found)
            manifest = {"run_id": f"n{n:04d}-{ph['serial']}", "started": f"{night.isoformat()}T22:{d % 60:02d}:00+00:00",
                        "mnn_version": build, "backend_actual": "opencl",
                        "opencl": {"device": ph["gpu"], "driver_version": f"{ph['prefix']}{n // ph['driver_every']}"},
                        "device": {"model": ph["model"], "serial": ph["serial"]},
                        "model": {"family": ph["llm"][0], "size_label": ph["llm"][1]},
                        "config": {"engine": "mnn", "max_new_tokens": 64, "max_turns": 4}}
            history.add_run(conn, Path("/nonexistent/bench") / manifest["run_id"], manifest, {"causes": found},
                            {"end_reason": "duration", "iterations": 600})
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"runs": nights * devices, "occurrences": occurrences}


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nights", type=int, default=1000)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--causes", type=int, default=200)
    ap.add_argument("--keep", metavar="DIR", help="keep the database and the site here")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="soak-bench-dashboard-"))
    work.mkdir(parents=True, exist_ok=True)
    db, site = work / "history.sqlite", work / "site"
    try:
        if not db.exists():
            t0 = time.perf_counter()
            filled = _fill(db, args.nights, args.devices, args.causes)
            print(f"filled {db}: {filled['runs']} runs, {filled['occurrences']} occurrences in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
        shutil.rmtree(site, ignore_errors=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "soak", "history", "--db", str(db), "--json", "html",
                               "-o", str(site)], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        out = json.loads(proc.stdout)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        db_mb = sum(p.stat().st_size for p in work.glob("history.sqlite*")) / 1e6
        result = {"runs": out["runs"], "nights": out["nights"], "causes": out["causes"], "counts": out["counts"],
                  "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
                  "db_mb": round(db_mb, 1), "site_mb": round(_tree_size(site) / 1e6, 1),
                  "load_avg": os.getloadavg()[0]}
        print(json.dumps(result, indent=1))
        ok = result["wall_s"] <= 30 and result["peak_rss_mb"] <= 300 and result["db_mb"] <= 200
        print("targets (<= 30 s, <= 300 MB, db <= 200 MB):", "met" if ok else "NOT met")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

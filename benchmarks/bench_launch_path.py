"""The interposer's own cost per kernel launch, over a do-nothing OpenCL driver.

    python benchmarks/bench_launch_path.py [--launches 1000000] [--repeat 5]

native/interposer/testprog/stub_cl.c is a driver whose clEnqueueNDRangeKernel returns at once;
testprog/launch_loop.c calls it N times (16 kernel objects in turn) straight or through the
interposer (SOAK_CL_REAL_LIB=<stub>), so each figure is the library's own ns per launch, with
nothing of a real driver's cost in it.  Arms: the stub alone, the interposer (profiling off) and
the interposer with SOAK_CL_PROFILE=1 (1 launch in 16 timed), each with the loop's modes: plain
(no event), event (the application asks for an event per launch and releases it), shapes (each
kernel object launched with two work sizes in turn).  Runs are interleaved --repeat times; each
run reports its best of 5 passes; the table gives the median and range over runs.

Measured 2026-12-07 on this project's 2-core VM (shared with other jobs, so +-30 %; clock_gettime
about 40 ns here), `--launches 500000 --repeat 3`, medians [range] in ns per launch:
    stub        plain 2.3 [2.2, 2.3]        event 3.1 [3.0, 3.3]        shapes 2.3 [2.1, 2.3]
    interposer  plain 41.1 [26.4, 46.7]     event 119.6 [113.3, 162.2]  shapes 43.3 [41.3, 45.9]
    profile     plain 253.6 [214.5, 332.6]  event 508.3 [486.2, 513.0]  shapes 301.0 [288.6, 327.5]
Where it goes (perf): interposer plain: the two relaxed atomic adds on the stats file (calls, and
the entry point's calls: ~85 %); event: the object table (a lock and a hash insert at the launch,
a lock and an erase at clReleaseEvent); before the table lost its tombstones the event arm cost
416-605 ns (905-1190 with profiling; 1,000,000 launches x 5, three runs each, same machine) and
every event ever created kept a slot (+77 MB after 2 million).  profile plain: two clock_gettime
per call for host_ns (~45 %), two plock round trips and the kernel cache; shapes: a kernel object
launched with a new work size looks its window slot up again (FNV over its name, strcmp).
After issue 27's launch path (a per-thread cache of (kernel object, work sizes) -> window slot, two
ways per set; the count one relaxed atomic add; host time clocked for 1 untimed launch in 16;
no lock, allocation or string hashing), main's build and this one interleaved 5 times on the same
stub and loop (500000 launches, best of 5 passes each; medians [range], ns per launch):
    off      plain 21.5 -> 21.1      shapes 21.5 -> 21.6     event 51.1 -> 50.9
    profile  plain 103.0 [102.6, 103.4] -> 46.8 [46.6, 46.8]   shapes 127.2 -> 48.0
             event 198.0 -> 142.9 (an event the application asks for: the object table)
so the profiler's own part of an untimed launch went from 82-106 ns to 26 ns.

--windows W: the profiler's own host time per window (its `cost_ns`: most of it the fixed part,
ending a window and writing its record, which no sampling thins; a tiny model's ~1 ms prefill
windows pay it whole), from a run cut into W windows, median over windows after the first 10.
`--launches 64000 --windows 2000 --repeat 3` (32 launches a window), before and after the record
writer lost snprintf and its per-character string copy (2026-12-07, same machine, interleaved):
14.5-14.6 us -> 8.5-8.7 us per window.  After the size classes
and coverage thinning (a fresh-size flag and a coverage flag read per launch), `--launches 500000
--repeat 3`: interposer plain 19.3, profile plain 40.5 [40.4, 40.6], shapes 41.5, event 120.9 ns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak.cl import interposer  # noqa: E402

TESTPROG = Path(__file__).resolve().parents[1] / "native" / "interposer" / "testprog"
MODES = ("plain", "event", "shapes")


def build(out: Path) -> tuple[Path, Path]:
    cc = shutil.which("cc") or "cc"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", str(TESTPROG / "stub_cl.c"), "-o", str(out / "libstub_cl.so")],
                   check=True)
    subprocess.run([cc, "-O2", str(TESTPROG / "launch_loop.c"), "-I", str(TESTPROG.parent), "-o", str(out / "launch_loop"), "-ldl"], check=True)
    return out / "libstub_cl.so", out / "launch_loop"


def run(loop: Path, lib: Path, n: int, mode: str, env: dict[str, str]) -> float:
    out = subprocess.run([str(loop), str(lib), str(n), mode, "5"], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True).stdout
    return float(dict(line.split() for line in out.splitlines())["ns_per_launch"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launches", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--windows", type=int, default=0, help="also: the profiler's own host time per window, the run "
                                                               "cut into this many windows")
    a = ap.parse_args()
    lib = interposer.interposer_library()
    with tempfile.TemporaryDirectory() as tmp:
        stub, loop = build(Path(tmp))
        base = {"SOAK_CL_REAL_LIB": str(stub), "SOAK_CL_STATS": f"{tmp}/s.%p.stats", "SOAK_CL_MEM_RECORDS": "0"}
        arms = {"stub": (stub, {}), "interposer": (lib, base), "profile": (lib, {**base, "SOAK_CL_PROFILE": "1"})}
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(a.repeat):
            for arm, (target, env) in arms.items():
                for mode in MODES:
                    results.setdefault((arm, mode), []).append(run(loop, target, a.launches, mode, env))
                    for p in Path(tmp).glob("s.*.stats"):
                        p.unlink()
        per_window = window_cost(loop, lib, a, base, Path(tmp)) if a.windows else []
    print(f"ns per launch over a do-nothing driver ({a.launches} launches, {a.repeat} interleaved runs)")
    for arm in arms:
        cells = []
        for mode in MODES:
            v = results[(arm, mode)]
            cells.append(f"{mode} {statistics.median(v):7.1f} [{min(v):.1f}, {max(v):.1f}]")
        print(f"  {arm:<11}" + "   ".join(cells))
    if per_window:
        print(f"profiler's own host time per window ({a.windows} windows of {a.launches // a.windows} launches; median "
              f"of each run): {statistics.median(per_window) / 1e3:.2f} us [{min(per_window) / 1e3:.2f}, "
              f"{max(per_window) / 1e3:.2f}]")
    return 0


def window_cost(loop: Path, lib: Path, a, base: dict[str, str], tmp: Path) -> list[float]:
    """Per run: the median `cost_ns` of its profile records after the first 10 windows."""
    out = []
    for k in range(a.repeat):
        trace = tmp / f"w{k}.jsonl"
        env = {**base, "SOAK_CL_PROFILE": "1", "SOAK_CL_TRACE": str(trace), "LAUNCH_LOOP_WINDOWS": str(a.windows)}
        subprocess.run([str(loop), str(lib), str(a.launches), "plain", "1"], env={**os.environ, **env},
                       capture_output=True, check=True)
        recs = [json.loads(x) for x in trace.read_text().splitlines() if '"type":"profile"' in x]
        out.append(statistics.median(r["cost_ns"] for r in recs[10:] or recs))
    return out


if __name__ == "__main__":
    sys.exit(main())

"""Bytes of cl_call_error events and of cl_trace.jsonl per iteration on a persistent enqueue
failure, on PoCL, with counts checked exactly (issue 11, "Bounded records").

    python benchmarks/bench_cl_records.py [--iterations 40] [--calls 4300] [--from 1000] [--kernels 1,32]

Runs soak's cl_workload (native/interposer/testprog) through the interposer with
--cl-fault clEnqueueNDRangeKernel=-5@from:N: each "iteration" is one step of CALLS NDRange
enqueues over KERNELS distinct kernels (MNN on the H200 made ~4,300 failing enqueues per
iteration).  After each step the benchmark does what `soak run` does after an iteration:
TraceReader.poll(), trace_events(), EventLog.emit().  It checks that the counts in the
events equal the failures the workload itself saw, per iteration, and the interposer's total.

"before": every error its own record (SOAK_CL_ERROR_SAMPLES=0) and its own event, as soak
wrote them before folding.  "after": the default (3 records per kind and poll, one event per
kind with its exact count).  Exit status 1 when a count is off or after > 50 KB/iteration.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak.cl import interposer  # noqa: E402
from soak.cl.trace import TraceReader
from soak.cl.trace_events import trace_events  # noqa: E402
from soak.events import EventLog  # noqa: E402

LIMIT = 50 * 1024


def build() -> tuple[Path, Path]:
    lib = interposer.interposer_library()
    build_dir = next(d for d in [lib.parent, *lib.parents] if (d / "CMakeCache.txt").exists())
    subprocess.run([shutil.which("cmake"), "--build", str(build_dir), "--target", "cl_workload", "-j", "2"],
                   check=True, capture_output=True)
    return lib.parent, lib.parent / "testprog" / "cl_workload"


def one(lib_dir: Path, workload: Path, iterations: int, calls: int, kernels: int, start: int, fold: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        env = dict(os.environ)
        env.update(interposer.prepare({"faults": f"clEnqueueNDRangeKernel=-5@from:{start}"}, run,
                                      interposer_dir=lib_dir, mnn_paths=()))
        env["SOAK_CL_MEM_RECORDS"] = "0"
        if not fold:
            env["SOAK_CL_ERROR_SAMPLES"] = "0"
        proc = subprocess.Popen([str(workload), "--steps", str(iterations), "--step-calls", str(calls),
                                 "--step-kernels", str(kernels), "--step-sync"], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        reader = TraceReader(run)
        log = EventLog(run / "events.jsonl", "bench")
        bad = []
        total = 0
        for i in range(iterations):
            failed = None
            for line in proc.stdout:
                w = line.split()
                if w[:2] == ["result", "step"]:
                    failed = int(w[3].split("=")[1])
                    break
            assert failed is not None, "workload ended early"
            records = reader.poll() if fold else reader.poll_raw()
            counted = 0
            for name, fields in trace_events(records, i):
                log.emit(name, **fields)
                counted += fields.get("count", 1) if name == "cl_call_error" else 0
            if counted != failed:
                bad.append((i, failed, counted))
            total += failed
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.stdin.close()
        rc = proc.wait(timeout=120)
        log.close()
        interposer_total = reader.stats()["api"]["clEnqueueNDRangeKernel"]["errors"]
        return {"rc": rc, "events_bytes": (run / "events.jsonl").stat().st_size,
                "trace_bytes": (run / "cl_trace.jsonl").stat().st_size, "failures": total,
                "interposer_errors": interposer_total, "mismatches": bad}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--calls", type=int, default=4300, help="NDRange enqueues per iteration")
    ap.add_argument("--from", dest="start", type=int, default=1000, help="first failing NDRange call")
    ap.add_argument("--kernels", default="1,32", help="distinct kernel names, comma-separated cases")
    ap.add_argument("--before-iterations", type=int, default=10,
                    help="iterations for the unfolded baseline (it writes every error)")
    a = ap.parse_args()
    lib_dir, workload = build()
    ok = True
    print(f"persistent clEnqueueNDRangeKernel=-5@from:{a.start}, {a.calls} enqueues/iteration, PoCL")
    print(f"{'kernels':>7} {'mode':>6} {'iters':>5} {'events B/iter':>14} {'trace B/iter':>13} "
          f"{'failures':>9} {'counts':>7}")
    for k in [int(x) for x in a.kernels.split(",")]:
        per = {}
        for mode, fold, n in (("before", False, a.before_iterations), ("after", True, a.iterations)):
            r = one(lib_dir, workload, n, a.calls, k, a.start, fold)
            exact = not r["mismatches"] and r["failures"] == r["interposer_errors"] and r["rc"] == 0
            ok &= exact
            per[mode] = r["events_bytes"] / n
            print(f"{k:>7} {mode:>6} {n:>5} {r['events_bytes'] / n:>14,.0f} {r['trace_bytes'] / n:>13,.0f} "
                  f"{r['failures']:>9,} {'exact' if exact else 'OFF':>7}")
            if r["mismatches"]:
                print(f"        mismatches (iteration, workload saw, events say): {r['mismatches'][:5]}")
            if mode == "after" and r["events_bytes"] / n > LIMIT:
                ok = False
                print(f"        over the {LIMIT:,} B/iteration target")
        print(f"{k:>7} {'ratio':>6} {'':>5} {per['before'] / per['after']:>13,.0f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

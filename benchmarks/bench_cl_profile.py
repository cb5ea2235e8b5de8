"""Cost of --cl-profile on enqueue-bound work, on PoCL (issue 14: profiling on <= 10 %).

    python benchmarks/bench_cl_profile.py [--steps 12] [--calls 4000] [--kernels 32] [--repeat 3]

Runs soak's cl_workload --steps: each step enqueues CALLS NDRange kernels (KERNELS distinct
names, no events) and ends with clFinish; the workload times each step in C.  Three ways:
straight to the real libOpenCL.so.1, through the interposer, through the interposer with
SOAK_CL_PROFILE=1 (profiling queue, an event per enqueue, read without blocking, one profile
record per window).  Reports the median step time of the best run of each and the ratios.
PoCL runs kernels on this machine's CPU; the figures say what the interposer adds per
enqueue, not what a GPU driver would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak.cl import interposer  # noqa: E402


def build() -> tuple[Path, Path]:
    lib = interposer.interposer_library()
    build_dir = next(d for d in [lib.parent, *lib.parents] if (d / "CMakeCache.txt").exists())
    subprocess.run([shutil.which("cmake"), "--build", str(build_dir), "--target", "cl_workload", "-j", "2"],
                   check=True, capture_output=True)
    return lib.parent, lib.parent / "testprog" / "cl_workload"


def steps_ns(workload: Path, env: dict, a) -> list[float]:
    out = subprocess.run([str(workload), "--steps", str(a.steps), "--step-calls", str(a.calls),
                          "--step-kernels", str(a.kernels)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    ns = [float(ln.split("ns=")[1]) for ln in out.stdout.splitlines() if ln.startswith("result step ")]
    assert len(ns) == a.steps
    return ns[1:]  # the first step warms up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--kernels", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    lib_dir, workload = build()
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(os.environ)
        direct = dict(base, CL_WORKLOAD_LIB=interposer.find_real_library())
        through = dict(base)
        through.update(interposer.prepare({}, Path(tmp) / "off", interposer_dir=lib_dir, mnn_paths=()))
        prof = dict(base)
        prof.update(interposer.prepare({"profile": True}, Path(tmp) / "on", interposer_dir=lib_dir, mnn_paths=()))
        best = {}
        for _ in range(a.repeat):  # interleaved, so load on the machine hits all three alike
            for name, env in (("direct", direct), ("interposer", through), ("profile", prof)):
                med = statistics.median(steps_ns(workload, env, a))
                best[name] = min(best.get(name, med), med)
    per = {k: v / a.calls for k, v in best.items()}
    print(f"{a.calls} NDRange enqueues + clFinish per step, {a.kernels} kernels, PoCL; median step, best of {a.repeat}")
    for name in ("direct", "interposer", "profile"):
        print(f"  {name:<11} {best[name] / 1e6:9.2f} ms/step  {per[name]:8.0f} ns/enqueue  "
              f"x{best[name] / best['direct']:.3f} vs direct")
    print(f"  profiling on vs off: x{best['profile'] / best['interposer']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

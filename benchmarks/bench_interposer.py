"""Per-call overhead of the OpenCL interposer, on PoCL.

    python benchmarks/bench_interposer.py [--calls N] [--repeat R]

Runs soak's cl_workload (native/interposer/testprog) with --bench N, which times
N calls of clGetPlatformInfo(CL_PLATFORM_NAME) and of clSetKernelArg in C:
once against the real libOpenCL.so.1, once through the interposer (recording
on: trace + stats files), and once with a fault rule on clSetKernelArg that
never fires (the rule-evaluation path).  Best of R runs; prints ns/call and the
added ns and ratio.
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


def _build_dir(lib: Path) -> Path:
    """The CMake build folder holding the interposer (standalone or under native/)."""
    for d in [lib.parent, *lib.parents]:
        if (d / "CMakeCache.txt").exists():
            return d
    raise AssertionError(f"no CMake build folder above {lib}")


def build() -> tuple[Path, Path]:
    lib = interposer.interposer_library()
    subprocess.run([shutil.which("cmake"), "--build", str(_build_dir(lib)), "--target", "cl_workload", "-j", "2"],
                   check=True, capture_output=True)
    return lib, lib.parent / "testprog" / "cl_workload"


def measure(workload: Path, calls: int, env: dict[str, str]) -> dict[str, float]:
    full = dict(os.environ)
    full.update(env)
    out = subprocess.run([str(workload), "--bench", str(calls)], env=full, capture_output=True, text=True,
                         check=True).stdout
    res = {}
    for line in out.splitlines():
        w = line.split()
        if w[:2] == ["result", "bench"]:
            res[w[2]] = float(w[3])
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    lib, workload = build()
    real = interposer.find_real_library()
    with tempfile.TemporaryDirectory() as tmp:
        modes = {
            "direct": {"CL_WORKLOAD_LIB": real},
            "interposer": interposer.prepare({}, Path(tmp) / "a", interposer_dir=lib.parent, mnn_paths=()),
            "interposer+rule": interposer.prepare({"faults": "clSetKernelArg=-5@nth:999999999999"}, Path(tmp) / "b",
                                                  interposer_dir=lib.parent, mnn_paths=()),
        }
        best: dict[str, dict[str, float]] = {}
        for _ in range(a.repeat):
            for mode, env in modes.items():
                for api, ns in measure(workload, a.calls, env).items():
                    best.setdefault(mode, {})[api] = min(ns, best.get(mode, {}).get(api, float("inf")))
    print(f"interposer per-call overhead, {a.calls} calls, best of {a.repeat} (PoCL, {os.cpu_count()} CPUs)")
    print(f"{'api':<20}{'direct ns':>11}{'interposer ns':>15}{'added ns':>10}{'ratio':>8}"
          f"{'with rule ns':>14}{'ratio':>8}")
    for api in best["direct"]:
        d, i, r = best["direct"][api], best["interposer"][api], best["interposer+rule"][api]
        print(f"{api:<20}{d:>11.1f}{i:>15.1f}{i - d:>10.1f}{i / d:>8.2f}{r:>14.1f}{r / d:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

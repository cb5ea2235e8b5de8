"""Does timing a launch change the kernel's own device time?  Compares --cl-profile run folders of one
seeded workload (e.g. the cost budget against --cl-profile-sample 1): per phase, each kernel shape's median
p50 device time per launch over the windows that timed it, and the device time per launch the run counted
(measured plus estimated / launches), as ratios against the last run, weighted by that run's device time.

    python3 benchmarks/gpu/intrusion.py RUN_SAMPLED [RUN_...] RUN_EVERY_LAUNCH
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from soak.analysis.profile import phase_of  # noqa: E402
from soak.run_folder import read_events  # noqa: E402


def shapes(run: Path) -> dict:
    """(phase, kernel, gws, lws) -> {p50s: [...], count, total_ns, timed}"""
    out: dict = defaultdict(lambda: {"p50s": [], "count": 0, "total_ns": 0, "timed": 0})
    for e in read_events(run, kinds={"cl_profile"}):
        ph = phase_of(e)
        for c in e.get("commands") or []:
            if c.get("api") != "clEnqueueNDRangeKernel":
                continue
            k = (ph, c.get("kernel"), tuple(c.get("gws") or ()), tuple(c.get("lws") or ()))
            s = out[k]
            timed = c.get("timed", c.get("count", 0))
            s["count"] += c.get("count", 0)
            s["total_ns"] += c.get("total_ns", 0)
            s["timed"] += timed
            if timed and c.get("p50_ns"):
                s["p50s"].append(c["p50_ns"])
    return out


def main(runs: list[str]) -> None:
    ref_run = Path(runs[-1])
    ref = shapes(ref_run)
    for r in runs[:-1]:
        got = shapes(Path(r))
        print(f"{Path(r).name} against {ref_run.name} (per launch, weighted by {ref_run.name}'s device time):")
        for ph in ("load", "prefill", "decode"):
            w_p50 = w_mean = w = 0.0
            n = both = 0
            for k, b in ref.items():
                if k[0] != ph or not b["count"]:
                    continue
                n += 1
                a = got.get(k)
                if not a or not a["count"] or not a["p50s"] or not b["p50s"]:
                    continue
                both += 1
                weight = b["total_ns"]
                w_p50 += weight * statistics.median(a["p50s"]) / statistics.median(b["p50s"])
                w_mean += weight * (a["total_ns"] / a["count"]) / (b["total_ns"] / b["count"])
                w += weight
            if w:
                print(f"  {ph:8s} {both} of {n} shapes timed in both: p50 per launch x{w_p50 / w:.3f}, "
                      f"counted device time per launch x{w_mean / w:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Benchmark: `soak merge` of a night of 1,000 run folders from 50 phones (issue 16).

    python benchmarks/bench_merge.py [--runs 1000] [--devices 50] [--keep DIR] [--sources DIR]

Makes real test-engine runs (clean, crash, CL error storm, KV map error, hang, bad output;
gated once), then copies them into RUNS folders laid out as CI artifacts (job-N/<run-id>/),
varying each copy's manifest as if it ran on one of DEVICES phones (10 models x serials, their
GPU/driver, MNN build, start time).  2% of the copies lose classification.json (killed runs:
the merge classifies them) and 2% lose summary.json.  Then times, in a fresh process,

    soak merge ARTIFACTS -o OUT --history OUT/history.sqlite --quiet

for a quarter of the runs and for all of them, and reports wall time, CPU time and peak RSS
of the merge process (ru_maxrss of the child): memory is bounded when the peak barely grows
from RUNS/4 to RUNS.  Target: <= 60 s for 1,000 runs on this 2-core machine.

Measured 2026-12-01 on this 2-vCPU host shared with other sessions, 1,000 runs (62 MiB) from
50 devices, 6 distinct root causes, 20 classified by the merge, 614 gated, --history on:
  load average 10.5: 23.5 s wall, 6.6 s CPU, peak RSS 52 MiB (250 runs: 6.8 s, 1.7 s CPU, 49 MiB:
  x1.07 RSS for x4 runs); outputs 590 KiB table, 424 KiB HTML, 1.9 MiB JUnit, 372 KiB history.
  (Earlier, with the classifier before root causes: 15.6-21.4 s wall, 4.6-5.3 s CPU, 41-45 MiB.)
The CPU time (about 6.5 ms a run) is what an idle machine's wall time would be near.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from soak.run_folder import MERGE_TABLE  # noqa: E402

PLANS = {
    "clean": [],
    "crash": [{"kind": "crash", "at": [7], "signal": "segv"}],
    "storm": [{"kind": "cl_error", "at": [5, 11], "code": -5, "info": "Raster", "repeat": 20}],
    "maperr": [{"kind": "kv_map_error", "at": [9]}],
    "hang": [{"kind": "hang", "at": [6], "seconds": 3600}],
    "garbage": [{"kind": "garbage", "at": [4, 8]}, {"kind": "crash", "at": [20], "signal": "abort"}],
}
MODELS = [("Pixel 8", "Mali-G715", "r44p0"), ("SM-S911B", "Adreno (TM) 740", "0676.32"),
          ("SM-A546B", "Mali-G68", "r38p1"), ("Xiaomi 14", "Adreno (TM) 750", "0744.8"),
          ("OnePlus 12", "Adreno (TM) 750", "0762.10"), ("Pixel 7a", "Mali-G710", "r40p0"),
          ("moto g84", "Adreno (TM) 619", "0615.65"), ("Redmi Note 13", "Mali-G57", "r32p1"),
          ("vivo X100", "Immortalis-G720", "r46p0"), ("Galaxy Tab S9", "Adreno (TM) 740", "0676.40")]


def make_sources(dest: Path) -> list[Path]:
    from soak.loop.runner import RunConfig, run_soak
    from soak.outputs.gate import gate_run

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, plan in PLANS.items():
        run = dest / name
        if not (run / "classification.json").is_file():
            shutil.rmtree(run, ignore_errors=True)
            cfg = RunConfig(engine="test", iterations=30, seed=11, out_dir=str(dest), run_id=name, fault_plan=plan,
                            max_new_tokens=8, quiet=True, argv=["bench_merge", name])
            cfg.timeouts.respond = 2.0
            run_soak(cfg)
            if name in ("clean", "crash"):  # gate-junit.xml: the merge reads gate results when a run has them
                with contextlib.redirect_stdout(io.StringIO()):
                    gate_run(run, None)
        out.append(run)
    return out


def synthesise(sources: list[Path], dest: Path, runs: int, devices: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    phones = [(MODELS[i % len(MODELS)], f"{chr(65 + i % 26)}{i:03d}X{rng.randrange(16**6):06X}") for i in range(devices)]
    for n in range(runs):
        (model, gpu, driver), serial = phones[n % devices]
        src = rng.choices(sources, weights=[50, 10, 15, 8, 5, 12])[0]
        run_id = f"night-{n // devices:02d}-{serial}-{src.name}"
        run = dest / f"job-{n:04d}" / run_id
        shutil.copytree(src, run)
        m = json.loads((run / "manifest.json").read_text())
        day = 1 + n // devices % 28
        m.update(run_id=run_id, started=f"2026-11-{day:02d}T02:{n % 60:02d}:00+00:00",
                 mnn_version=rng.choice(["3.6.0", "3.6.1"]), opencl={"device": gpu, "driver_version": driver},
                 device={"kind": "adb", "serial": serial, "model": model, "adb_server": f"lab{n % devices // 10}:5037",
                         "connection": "usb", "gpu": gpu, "gpu_driver": driver, "runner_host": f"lab{n % devices // 10}"})
        (run / "manifest.json").write_text(json.dumps(m))
        if n % 50 == 7:
            (run / "classification.json").unlink()
        if n % 50 == 13:
            (run / "summary.json").unlink()


def timed_merge(artifacts: Path, out: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "soak", "merge", str(artifacts), "-o", str(out),
                          "--history", str(out / "history.sqlite"), "--quiet"], cwd=ROOT,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"soak merge failed ({res.returncode}): {res.stderr}")
    table = json.loads((out / MERGE_TABLE).read_text())
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_mib": after.ru_maxrss / 1024, "runs": table["totals"]["runs"],
            "devices": table["totals"]["devices"], "faults": table["totals"]["faults"],
            "classified_by_merge": table["totals"]["classified_by_merge"], "gated": table["totals"]["gated"],
            "sizes_kib": {p.name: round(p.stat().st_size / 1024) for p in sorted(out.iterdir()) if p.is_file()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--keep", metavar="DIR", help="build the night here and keep it")
    ap.add_argument("--sources", metavar="DIR", help="reuse (or make) the source runs here")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-merge-"))
    try:
        t0 = time.perf_counter()
        sources = make_sources(Path(args.sources) if args.sources else work / "sources")
        print(f"source runs: {len(sources)} real test-engine runs in {time.perf_counter() - t0:.1f} s")
        results = {}
        for n in (args.runs // 4, args.runs):
            night = work / f"artifacts-{n}"
            shutil.rmtree(night, ignore_errors=True)
            t1 = time.perf_counter()
            synthesise(sources, night, n, min(args.devices, n))
            size = sum(f.stat().st_size for f in night.rglob("*") if f.is_file())
            print(f"synthesised {n} run folders ({size / 2**20:.0f} MiB) in {time.perf_counter() - t1:.1f} s")
            results[n] = r = timed_merge(night, work / f"merged-{n}")
            print(f"merge of {r['runs']} runs from {r['devices']} devices: {r['wall_s']:.2f} s wall, "
                  f"{r['cpu_s']:.2f} s CPU, peak RSS {r['peak_rss_mib']:.0f} MiB; {r['faults']} distinct faults, "
                  f"{r['classified_by_merge']} classified by the merge, {r['gated']} gated; outputs {r['sizes_kib']} KiB")
        small, big = results[args.runs // 4], results[args.runs]
        print(f"\n{args.runs} runs: {big['wall_s']:.2f} s (target <= 60 s: {'met' if big['wall_s'] <= 60 else 'MISSED'}); "
              f"peak RSS {big['peak_rss_mib']:.0f} MiB vs {small['peak_rss_mib']:.0f} MiB for {args.runs // 4} runs "
              f"(x{big['peak_rss_mib'] / small['peak_rss_mib']:.2f} for x4 the runs); "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure the memory-leak detector: real test-engine runs, and LLM workload shapes.

Part 1, real runs of the fault-injecting test engine.  Prints two figures:
  * false-positive rate: the share of clean runs (no fault plan) in which any
    host series (rss, uss, pss) gets the verdict "leak";
  * the smallest leak detected: for each run length, the smallest per-call
    leak (test engine fault kind "leak", `bytes` malloc'd and touched per
    call) whose runs were all judged "leak".

Part 2, LLM workload shapes (tests/outputs/_shapes.py: conversations, context
growth, reset; levels from real MNN: 213 MB floor, KV growth 1.1x the model's
bytes per token, AR(1) noise of 2 MB sd, page-granular):
  * false positives on noisy clean sawtooth runs (memory follows the context
    and comes back at reset): any verdict other than stable / growth_stopped;
  * sensitivity per shape and size: the share of runs given the right verdict
    (ratchet -> ratchet; leak and ratchet+leak -> leak; a lasting step -> not stable; a step ratchet,
    the level stepping up by `step_bytes` each time the longest context passes 1k and 2k tokens as MNN
    OpenCL's GPU pool does -> ratchet).

Usage:
    python benchmarks/bench_leak_detector.py                 # 100 clean runs of 60 iterations + leak grid + shapes
    python benchmarks/bench_leak_detector.py --clean-runs 300 --shape-clean-runs 300 --jobs 2
    python benchmarks/bench_leak_detector.py --clean-runs 0 --repeats 0      # shapes only

Each run is a real `soak run --engine test` (in a worker process, as the CLI
does), analysed from its run folder with soak.analysis.verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one_run(out_dir: str, run_id: str, iterations: int, seed: int, leak_bytes: int, min_growth: float | None) -> dict:
    from soak.analysis.memory_verdict import LeakCriteria
    from soak.analysis.verdicts import compute_verdicts
    from soak.loop.config import RunConfig
    from soak.loop.runner import run_soak

    plan = [{"kind": "leak", "bytes": leak_bytes, "every": 1}] if leak_bytes else []
    cfg = RunConfig(engine="test", iterations=iterations, seed=seed, out_dir=out_dir, run_id=run_id,
                    fault_plan=plan, max_new_tokens=16, quiet=True, argv=["bench_leak_detector"])
    result = run_soak(cfg)
    criteria = LeakCriteria() if min_growth is None else LeakCriteria(min_growth_bytes=min_growth)
    v = compute_verdicts(result.run_dir, criteria=criteria, write=False)
    host = {k: v["memory"]["series"][k] for k in ("rss", "uss", "pss")}
    return {"run_id": run_id, "iterations": iterations, "leak_bytes": leak_bytes, "seed": seed,
            "leak": any(s["verdict"] == "leak" for s in host.values()),
            "verdicts": {k: s["verdict"] for k, s in host.items()},
            "rss_slope": (host["rss"].get("slope_per_iteration") or {}).get("value")}


def _shapes_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "outputs" / "_shapes.py"
    spec = importlib.util.spec_from_file_location("soak_bench_shapes", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SHAPE_GRID = {  # shape -> (parameter, sizes)
    "ratchet": ("kv_per_token", [3e3, 13.5e3, 50e3]),
    "leak": ("leak_per_iteration", [30e3, 100e3, 300e3]),
    "step": ("step_fraction", [0.2, 0.3, 0.5]),
    "ratchet_leak": ("leak_per_iteration", [30e3, 100e3, 300e3]),
    "step_ratchet": ("step_bytes", [10e6, 25e6, 60e6]),   # per threshold (1k and 2k tokens), on a 213 MB floor
}


def one_shape(out_dir: str, shape: str, seed: int, params: dict) -> dict:
    from soak.analysis.verdicts import compute_verdicts

    mod = _shapes_module()
    run = mod.write_shape(Path(out_dir) / f"{shape}-{seed}-{abs(hash(tuple(sorted(params.items()))))}", shape,
                          seed=seed, **params)
    v = compute_verdicts(run, write=False)["memory"]["series"]["rss"]
    return {"shape": shape, "seed": seed, "params": params, "verdict": v["verdict"],
            "right": v["verdict"] in mod.EXPECTED[shape]}


def shapes_report(pool, tmp: str, clean_runs: int, repeats: int) -> None:
    jobs = [pool.submit(one_shape, tmp, "clean", 5000 + k, {}) for k in range(clean_runs)]
    for shape, (param, sizes) in SHAPE_GRID.items():
        jobs += [pool.submit(one_shape, tmp, shape, 6000 + r, {param: size}) for size in sizes for r in range(repeats)]
    results = [j.result() for j in jobs]
    clean = [r for r in results if r["shape"] == "clean"]
    fps = [r for r in clean if r["verdict"] not in ("stable", "growth_stopped")]
    print(f"workload shapes: false positives {len(fps)}/{len(clean)} noisy clean sawtooth runs "
          f"(300 iterations, conversations of 1-8 turns, AR(1) noise sd 2 MB)")
    for r in fps:
        print(f"  false positive: seed {r['seed']} -> {r['verdict']}")
    for shape, (param, sizes) in SHAPE_GRID.items():
        cells = []
        for size in sizes:
            cell = [r for r in results if r["shape"] == shape and r["params"].get(param) == size]
            cells.append(f"{param}={size:g}: {sum(r['right'] for r in cell)}/{len(cell)}")
        print(f"  sensitivity {shape:13s} {'   '.join(cells)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean-runs", type=int, default=100)
    ap.add_argument("--clean-iterations", type=int, default=60)
    ap.add_argument("--iterations", default="30,60,120", help="run lengths for the leak grid")
    ap.add_argument("--leak-bytes", default="4096,16384,32768,65536,131072,262144",
                    help="per-call leak sizes for the grid")
    ap.add_argument("--repeats", type=int, default=5, help="runs per grid cell (all must detect)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", metavar="FILE", help="also write every run's result here")
    ap.add_argument("--shape-clean-runs", type=int, default=100, help="noisy clean sawtooth runs (part 2)")
    ap.add_argument("--shape-repeats", type=int, default=20, help="runs per shape and size (part 2)")
    ap.add_argument("--min-growth-bytes", type=float, default=None,
                    help="override LeakCriteria.min_growth_bytes (the materiality floor; default 1 MiB)")
    args = ap.parse_args(argv)
    lengths = [int(x) for x in args.iterations.split(",")]
    sizes = sorted(int(x) for x in args.leak_bytes.split(","))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="soak-bench-leak-") as tmp, ProcessPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(one_run, tmp, f"clean-{k}", args.clean_iterations, 1000 + k, 0, args.min_growth_bytes)
                for k in range(args.clean_runs)]
        jobs += [pool.submit(one_run, tmp, f"leak-{b}-{n}-{r}", n, 2000 + r, b, args.min_growth_bytes)
                 for n in lengths for b in sizes for r in range(args.repeats)]
        results = [j.result() for j in jobs]
        if args.shape_clean_runs or args.shape_repeats:
            shapes_report(pool, tmp, args.shape_clean_runs, args.shape_repeats)
    clean = [r for r in results if not r["leak_bytes"]]
    fp = sum(r["leak"] for r in clean)
    print(f"false positives: {fp}/{len(clean)} clean runs of {args.clean_iterations} iterations "
          f"= {100.0 * fp / max(1, len(clean)):.1f}%")
    for r in clean:
        if r["leak"]:
            print(f"  false positive: {r['run_id']} seed {r['seed']} {r['verdicts']} rss slope {r['rss_slope']}")
    for n in lengths:
        row = []
        smallest = None
        for b in sizes:
            cell = [r for r in results if r["leak_bytes"] == b and r["iterations"] == n]
            hits = sum(r["leak"] for r in cell)
            row.append(f"{b // 1024}KiB:{hits}/{len(cell)}")
            if smallest is None and cell and hits == len(cell):
                smallest = b
        size = f"{smallest} bytes ({smallest / 1024:.0f} KiB) per call" if smallest else "none of the sizes tried"
        print(f"smallest leak detected in {n} iterations (all {args.repeats} runs): {size}   [{' '.join(row)}]")
    print(f"({len(results)} runs in {time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

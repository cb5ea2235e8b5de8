"""Benchmark: the wrong-answer oracle through soak itself.

    python benchmarks/bench_oracle.py --out DIR [--engine mnn] [--backend opencl] [--model M] [--seed 5]
        [--iterations 120] [--max-new-tokens 64] [--precision normal] [--thread-num 65] [--cl-gpu-override]
        [--ref-engine ENGINE] [--ref-backend cpu] [--runs free,checked]

Makes a reference (`soak reference`, the oracle: --ref-engine/--ref-backend at precision high), then runs
the same seeded workload twice on the candidate configuration: free (no oracle) and checked (every
conversation teacher-forced).  Prints:

- the reference's size per step (issue 23 target: <= 200 bytes);
- decode tok/s of free turns and of teacher-forced turns, medians over iterations, and their ratio
  (target >= 0.95 on the H200).  Free: generated tokens over the respond's wall time after its first
  token (the worker's engine_us less ttft: MNN's own decode_us leaves out the GPU wait on an
  asynchronous backend).  Checked: steps over the check call's wall time less its prefill (forward
  calls, the per-step comparison and the token texts included: everything the oracle adds);
- the healthy distributions of the per-turn maxima (max |delta| log-prob, KL) that the thresholds are
  chosen from, and the wrong/non-finite turns found.

Measured 2026-12-07 on one NVIDIA H100 (driver 580.159.04), hand-built MNN 3.6.1 OpenCL mode 68, the 44M Qwen2
(768 x 6), seed 5, 110 iterations x up to 48 new tokens (benchmarks/gpu/oracle.sh runs it):
    reference: 347,513 bytes, 2,092 steps: 166.1 bytes/step
    decode tok/s  free: median 416.7 (n=60, 263.5-603.9)  checked: median 430.9 (n=60)  ratio 1.034
    checked turns 110, steps 2092, argmax flips 258 (12.3%), wrong turns 0
    per-turn max |delta| log-prob: median 0.193  p99 0.307  max 0.357; per-turn max KL: 3.9e-4 / 7.8e-4 / 1.0e-3

`--runs checked` skips the free run; `--reference RUN` reuses a reference; `--skip-runs` analyses the
runs free-TAG and checked-TAG already in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from soak.run_folder import read_events  # noqa: E402


def soak(*args, env=None) -> None:
    cmd = [sys.executable, "-m", "soak", *args, "--quiet"]
    proc = subprocess.run(cmd, env=env, cwd=REPO)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} -> exit {proc.returncode}")


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def free_tps(run: Path) -> list[float]:
    """Per free iteration: generated / (engine wall after the first token)."""
    out = []
    for e in read_events(run, kinds={"iteration"}):
        gen, eng, ttft = e.get("generated_tokens") or 0, e.get("engine_s"), e.get("ttft_s")
        if gen >= 8 and eng and ttft is not None and eng > ttft:
            out.append((gen - 1) / (eng - ttft))
    return out


def checked_tps(run: Path) -> list[float]:
    """Per checked turn: steps / (check call wall - its prefill)."""
    engine_s = {e["i"]: e.get("engine_s") for e in read_events(run, kinds={"iteration"})}
    out = []
    for t in read_events(run, kinds={"oracle_turn"}):
        eng = engine_s.get(t["i"])
        if t["steps"] >= 8 and eng and t.get("prefill_us") is not None:
            decode = eng - t["prefill_us"] / 1e6
            if decode > 0:
                out.append(t["steps"] / decode)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--engine", default="mnn")
    p.add_argument("--backend", default="opencl")
    p.add_argument("--model", default=str(REPO / "soak" / "models" / "qwen2-tiny"))
    p.add_argument("--seed", default="5")
    p.add_argument("--iterations", default="120")
    p.add_argument("--max-new-tokens", default="64")
    p.add_argument("--precision", default="normal")
    p.add_argument("--thread-num", default=None)
    p.add_argument("--cl-gpu-override", action="store_true")
    p.add_argument("--ref-engine", default=None, help="the oracle's engine (default: --engine)")
    p.add_argument("--ref-backend", default="cpu")
    p.add_argument("--reference", default=None, help="reuse this reference run")
    p.add_argument("--runs", default="free,checked")
    p.add_argument("--skip-runs", action="store_true",
                   help="run nothing: analyse the runs free-TAG and checked-TAG already in --out")
    p.add_argument("--tag", default="")
    a = p.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = ["--model", a.model, "--seed", a.seed, "--iterations", a.iterations, "--max-new-tokens",
              a.max_new_tokens, "--out", str(out)]
    tag = a.tag or f"{a.backend}-{a.precision}"
    ref = Path(a.reference) if a.reference else out / "reference"
    if not a.reference and not a.skip_runs:
        soak("reference", "--engine", a.ref_engine or a.engine, "--backend", a.ref_backend, "--run-id", ref.name,
             *common)
    cand = ["--engine", a.engine, "--backend", a.backend, "--precision", a.precision, *common]
    if a.thread_num:
        cand += ["--thread-num", a.thread_num]
    if a.cl_gpu_override:
        cand += ["--cl-gpu-override"]
    runs = a.runs.split(",")
    if "free" in runs and not a.skip_runs:
        soak("run", *cand, "--run-id", f"free-{tag}")
    if "checked" in runs and not a.skip_runs:
        soak("run", *cand, "--run-id", f"checked-{tag}", "--reference", str(ref))

    lines = (ref / "reference.jsonl").read_text().splitlines()[1:]
    steps = sum(json.loads(line)["n"] for line in lines if line.startswith('{"turn"'))
    size = (ref / "reference.jsonl").stat().st_size
    print(f"reference: {size} bytes, {steps} steps: {size / max(steps, 1):.1f} bytes/step")
    result = {"reference_bytes_per_step": size / max(steps, 1)}
    if "free" in runs and "checked" in runs:
        f, c = free_tps(out / f"free-{tag}"), checked_tps(out / f"checked-{tag}")
        mf, mc = statistics.median(f), statistics.median(c)
        print(f"decode tok/s  free: median {mf:.1f} (n={len(f)}, {min(f):.1f}-{max(f):.1f})  "
              f"checked: median {mc:.1f} (n={len(c)}, {min(c):.1f}-{max(c):.1f})  ratio {mc / mf:.3f}")
        result.update(free_tps=mf, checked_tps=mc, ratio=mc / mf)
    if "checked" in runs:
        turns = list(read_events(out / f"checked-{tag}", kinds={"oracle_turn"}))
        ab = [t["abs_max"] for t in turns if t["abs_max"] is not None]
        kl = [t["kl_max"] for t in turns if t["kl_max"] is not None]
        flips = sum(t["flips"] for t in turns)
        nsteps = sum(t["steps"] for t in turns)
        print(f"checked turns {len(turns)}, steps {nsteps}, argmax flips {flips} ({flips / max(nsteps, 1):.1%})")
        print(f"per-turn max |delta| log-prob: median {quantile(ab, .5):.4g}  p99 {quantile(ab, .99):.4g}  "
              f"max {max(ab, default=float('nan')):.4g}")
        print(f"per-turn max KL:               median {quantile(kl, .5):.4g}  p99 {quantile(kl, .99):.4g}  "
              f"max {max(kl, default=float('nan')):.4g}")
        wrong = [(t["i"], t["first_over"]) for t in turns if t["wrong"]]
        print(f"wrong turns (iteration, first step over): {wrong}")
        result.update(turns=len(turns), steps=nsteps, flips=flips, abs_p50=quantile(ab, .5),
                      abs_p99=quantile(ab, .99), abs_max=max(ab, default=None), kl_p50=quantile(kl, .5),
                      kl_p99=quantile(kl, .99), kl_max=max(kl, default=None), wrong=wrong)
    (out / f"bench-{tag}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

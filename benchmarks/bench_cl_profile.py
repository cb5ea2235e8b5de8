"""Cost of the interposer and of --cl-profile (issue 14: off <= 2 %, on <= 10 % of decode tok/s;
issue 27: the same on a fast GPU with tiny kernels, where the profiler keeps a cost budget).

    python benchmarks/bench_cl_profile.py [--steps 12] [--calls 4000] [--kernels 32] [--repeat 5]
    python benchmarks/bench_cl_profile.py --engine mnn --mnn-build /work/mnn/build \
        --model MODEL_DIR --iterations 15 --max-new-tokens 64 --repeat 5 [--tmp-path CLCACHE]
    python benchmarks/bench_cl_profile.py --engine lib --engine-lib libsoak_mnn_shim.so \
        --plugin libMNN_CL.so --cl-real-lib /path/libOpenCL.so.1 --direct-lib-dir DIR ...

With --engine (mnn or lib: a real MNN on OpenCL), each arm is one `soak run` of the same seeded
workload; --arms picks them (default direct,interposer,profile):
  direct         --no-intercept (left out with --cl-gpu-override, which needs the interposer: PoCL)
  interposer     the interposer, profiling off
  profile        --cl-profile: the cost budget (default 5 %; --profile-budget), 1 in 16 at first, timed in
                 place (the engine's queues profile)
  profile-twin   the same with --cl-profile-queue twin: the engine's queues stay unprofiled, timed
                 commands run on profiling twins of them (native/interposer/twin.c)
  profile-fixed  --cl-profile --cl-profile-sample N (--profile-sample, default 16): the fixed rate
  profile-min    --cl-profile --cl-profile-sample 1000000: only each kernel's first launch per window
                 gets an event: what profiling costs besides events (the profiling queue, the
                 interposer's per-launch work)
  profile-all    --cl-profile --cl-profile-sample 1: an event per launch
interleaved --repeat times (so load on the machine hits every arm alike).  A run's decode tok/s is
the median over its iterations of generated tokens / decode time (--skip-first leaves out the
first iterations: kernel builds); the table gives each arm's runs, their median and range and the
ratio of medians against direct (else interposer) and the median of each round's own ratio
(paired: load that changes between rounds cancels out), with issue 27's targets (interposer >= 0.98,
--cl-profile >= 0.90).  Profiled runs also give, from their cl_profile events (soak profile),
each phase's closure against the engine's times (target within 10 %), the kernel launches per
timed one and the profiler's own cost against its budget.  Options the benchmark does not know go
to `soak run` as they are.  --direct-lib-dir: a folder put first on LD_LIBRARY_PATH for the direct
arm (holding a libOpenCL.so for the engine's dlopen).

Without --engine: the synthetic launch-bound case (--before-lib-dir: an older interposer build
interleaved with it, for before/after on a noisy machine).  soak's cl_workload --steps: each step
enqueues CALLS NDRange kernels (KERNELS distinct tiny ones, no events) and ends with clFinish; the
workload times each step in C; one reader poll per step (one profile window each, as soak's
iterations are).  Arms as above (direct: straight to the real libOpenCL.so.1), interleaved
--repeat times; per run the median step time after the first; the table gives launches per
second (median and range over runs) and the ratio of medians against direct.  On PoCL (kernels
on this machine's CPU) an event costs several us of host time, as in a GPU driver, so the
ratios move the way a launch-bound GPU decode's do.

Measured 2026-12-01 on one NVIDIA H200 (driver 580.159.04; hand-built MNN 3.6.1 OpenCL, 44M Qwen2,
thread_num 68; 15 iterations x 64 new tokens, seed 1; 6 interleaved runs per arm, medians; the
fixed 1 in 16 of then, total tokens / total decode time):
  direct       decode 424.2 tok/s [362.9, 479.6]
  interposer   decode 419.1 tok/s [351.8, 483.6]   x0.988 (target >= 0.98)
  profile      decode 388.7 tok/s [373.8, 410.8]   x0.916 (target >= 0.90)
  profile-all  decode 193.2 tok/s [182.5, 205.9]   x0.455 (an event on every launch)
Issue 27 (H100, 61M Qwen2 at ~1035 tok/s, 165 kernels/token): interposer x0.975, --cl-profile
(fixed 1 in 16) x0.767.

H100 80GB HBM3 (driver 580.159.04), 2026-12-07, hand-built MNN 3.6.1, 15 iterations x 64 new tokens, seed 1,
5 interleaved runs per arm (benchmarks/gpu/profile_cost.sh, profile_intrusion.sh), median, paired median:
  44M (768x6, MHA)       direct 421.0   interposer x1.008 (x0.998)   profile x0.991 (x0.961)   every launch x0.437
  61M (896x4, GQA 14/2)  direct 715.3   interposer x1.025 (x0.966)   profile x0.814 (x0.859)   every launch x0.383
  tiny (640K)            direct 1174.9  interposer x0.985 (x1.007)   profile x0.860 (x0.865)
  61M again, 3 runs per arm on a noisier machine: interposer x0.916, profile-min x0.894 (x0.807), profile x0.765:
  on the 61M most of the profiled arm's cost is there with only each kernel's first launch per window timed
  (the profiling queue, the profiled launch path), not in the sampling the budget controls.
H100 80GB HBM3 (driver 580.159.04), 2026-12-07, later build (443ea91: other commands than launches
sampled per entry point, timed commands on twin queues, since reverted to timing in place), same
protocol, 5 interleaved runs per arm (benchmarks/gpu/profile_cost.sh, MODELS_RUN="tiny 44m"):
  tiny (640K)            direct 1769.9  interposer x1.001 (x1.010)   profile x0.949 (x0.950)
  44M (768x6, MHA)       direct 444.4   interposer x0.997 (x0.995)   profile x0.958 (x0.957)
  decode closure 172-183 % (tiny) and 131-147 % (44M) with twins, against 102-106 % timed in place
  (the 44M's kernel totals stayed within 5 % of an every-launch run: the excess was outside them).
Decode closure 102-106 % in every profiled run; the tiny model's prefill closure 84 % (cost 10 % there:
its coverage launches, each kernel's first per window, are most of a ~1 ms prefill).
H100 80GB HBM3 (driver 580.159.04), 2026-12-07, build c6e90d7 (timed in place, other commands sampled,
the idle mark ending the window at once, outside_ns), same protocol, 5 interleaved runs per arm,
`QUEUE_COST=0 MODELS_RUN='tiny 44m' ARMS=direct,interposer,profile BOX=150 bash benchmarks/gpu/profile_cost.sh`,
on a host slower than 443ea91's (the tiny model's direct decode 1085 tok/s against 1770):
  tiny (640K)            direct 1084.7  interposer x0.995 (x0.995)   profile x0.858 (x0.863)
  44M (768x6, MHA)       direct 404.7   interposer x1.018 (x1.032)   profile x0.964 (x0.994)
  closure load / prefill / decode: tiny 99.9 / 83.9-86.8 / 107.0-108.6 %, 44M 99.9 / 97.0-97.4 / 105.6-108.4 %;
  profiler cost (its own records) tiny 5.1-5.4 % prefill, 3.1-3.2 % decode; 44M 1.5-1.6 %, 2.5-2.7 %.
  The tiny model's decode costs 14 % where its records count 3 %: the rest is not in the profiler's
  host time (the same x0.86 on the earlier slow host; x0.95 on the fast one).
PoCL synthetic, 2026-12-07, this project's shared 2-core VM (other jobs running: single runs vary
2x, so only the paired ratios mean anything, and even they move by 10-20 % between calls):
    python benchmarks/bench_cl_profile.py --steps 8 --calls 12000 --kernels 32 --repeat 7 \
        --arms direct,interposer,profile,profile-fixed,profile-min --before-lib-dir <main's build>
  paired ratios vs direct: interposer x1.013 (main's x1.022); --cl-profile (budget 5 %) x0.895,
  1 in 16 fixed x1.038 (main's 1 in 16: x0.870); profile-min x0.987.  The profiler's own cost
  from the records: 0.8 % of the windows' wall time (budget), 0.9 % (1 in 16), 0.3 % (min).
  The interposer's own ns per launch (bench_launch_path.py, main vs this, interleaved) is the
  figure this machine can measure: 103 -> 47 ns per untimed profiled launch.
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
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak.cl import interposer  # noqa: E402

ARMS = ("direct", "interposer", "profile", "profile-twin", "profile-fixed", "profile-min", "profile-all")
TARGETS = {"interposer": 0.98, "profile": 0.90, "profile-twin": 0.90}
PHASES = ("load", "prefill", "decode", "respond")


def build() -> tuple[Path, Path]:
    from soak import native_build

    lib = interposer.interposer_library()
    build_dir = next(d for d in [lib.parent, *lib.parents] if (d / "CMakeCache.txt").exists())
    workload = native_build.cmake_build(native_build.NATIVE_DIR / "interposer", build_dir, "testprog/cl_workload", [],
                                        "cl_workload", "the CL test workload")
    return lib.parent, workload


def profile_options(name: str, a) -> dict:
    """The interposer options of a profiled arm (prepare()'s dict)."""
    if name in ("profile", "profile-twin"):
        return {"profile": True, "profile_budget": a.profile_budget,
                "profile_queue": "twin" if name == "profile-twin" else "engine"}
    if name == "profile-fixed":
        return {"profile": True, "profile_sample": a.profile_sample, "profile_budget": 0}
    if name == "profile-min":
        return {"profile": True, "profile_sample": 1_000_000, "profile_budget": 0}
    return {"profile": True, "profile_sample": 1, "profile_budget": 0}


def profile_flags(name: str, a) -> list[str]:
    """The same as `soak run` flags."""
    if name in ("profile", "profile-twin"):
        return (["--cl-profile"] + (["--cl-profile-queue", "twin"] if name == "profile-twin" else [])
                + (["--cl-profile-budget", f"{a.profile_budget:g}"] if a.profile_budget is not None else []))
    if name == "profile-fixed":
        return ["--cl-profile", "--cl-profile-sample", str(a.profile_sample)]
    if name == "profile-min":
        return ["--cl-profile", "--cl-profile-sample", "1000000"]
    return ["--cl-profile", "--cl-profile-sample", "1"]


def profile_summary(run_dir: Path) -> dict:
    """Per phase (load, prefill, decode): closure, launches per timed one, the profiler's cost
    fraction, kernel device time (measured plus estimated) and launches."""
    from soak.analysis.profile import profile_run

    out = {}
    try:
        prof = profile_run(run_dir)
    except Exception as e:  # a run that left no usable events: said in the table, not a traceback
        return {"error": str(e)[:120]}
    for name in PHASES:
        ph = prof["phases"].get(name)
        if ph:
            out[name] = {"closure": ph.get("closure"), "rate": ph.get("rate"), "cost": ph.get("cost_fraction"),
                         "budget": ph.get("budget_pct"), "kernels_ns": ph.get("kernels_ns"),
                         "kernel_count": ph.get("kernel_count"),
                         # where the closure's terms come from, ms: what a closure off 100 % is made of
                         "terms": {k: round((ph.get(f"{k}_ns") or 0) / 1e6, 1) for k in
                                   ("kernels", "transfers", "other", "busy", "idle", "span", "host_only", "outside",
                                    "host_span", "measured", "estimated")}}
    return out


def soak_arm(name: str, k: int, a, rest: list[str], out: Path) -> dict:
    """One `soak run` of the arm: its median per-iteration decode tok/s (and prefill), profile."""
    run_id = f"bench-{name}-{k}"
    argv = [sys.executable, "-m", "soak", "run", "--engine", a.engine, "--seed", str(a.seed),
            "--iterations", str(a.iterations), "--max-new-tokens", str(a.max_new_tokens),
            "--backend", "opencl", "--out", str(out), "--run-id", run_id, "--quiet", *rest]
    env = dict(os.environ)
    if name == "direct":
        argv.append("--no-intercept")
        if a.direct_lib_dir:
            env["LD_LIBRARY_PATH"] = a.direct_lib_dir + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    else:
        argv.append("--intercept")
        if a.cl_gpu_override:
            argv.append("--cl-gpu-override")
        if name.startswith("profile"):
            argv += profile_flags(name, a)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=a.timeout)
    dec, pre = [], []
    backend = None
    events = out / run_id / "events.jsonl"
    iters = 0
    for line in events.read_text().splitlines() if events.exists() else []:
        e = json.loads(line)
        if e.get("event") == "iteration" and e.get("decode_us"):
            iters += 1
            if iters <= a.skip_first:
                continue
            dec.append((e.get("generated_tokens") or 0) / (e["decode_us"] / 1e6))
            if e.get("prefill_us"):
                pre.append((e.get("prompt_tokens") or 0) / (e["prefill_us"] / 1e6))
        elif e.get("event") == "load" and e.get("ok"):
            backend = e.get("backend_actual")
    if proc.returncode not in (0, 1) or not dec:
        print(f"  {run_id}: rc {proc.returncode}, no decode measured: {proc.stderr.strip()[-300:]}", flush=True)
    prof = profile_summary(out / run_id) if name.startswith("profile") and dec else {}
    if a.keep_runs:  # the run's events (iterations, cl_profile records) for a look afterwards
        Path(a.keep_runs).mkdir(parents=True, exist_ok=True)
        if (out / run_id / "events.jsonl").exists():
            shutil.copy(out / run_id / "events.jsonl", Path(a.keep_runs) / f"{run_id}.events.jsonl")
    shutil.rmtree(out / run_id, ignore_errors=True)
    return {"decode_tps": statistics.median(dec) if dec else None,
            "prefill_tps": statistics.median(pre) if pre else None, "backend": backend, "rc": proc.returncode,
            "profile": prof}


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _table(title: str, unit: str, arms: list[str], runs: dict[str, list[float]], fmt: str = "{:.1f}") -> None:
    """Issue 27's table: arm | runs | median [range] | vs the reference | target."""
    ref = "direct" if any(runs.get("direct") or []) else arms[0]
    base = _median([x for x in runs.get(ref, []) if x])
    print(title)
    print(f"| arm | {unit} (each run) | median | range | vs {ref} | paired | target |")
    print("|---|---|---|---|---|---|---|")
    for name in arms:
        xs = [x for x in runs.get(name, []) if x]
        med = _median(xs)
        ratio = f"x{med / base:.3f}" if med and base else "-"
        # the median of each round's ratio (arm / reference in the same round): load that changes
        # between rounds cancels out
        pairs = [x / r for x, r in zip(runs.get(name, []), runs.get(ref, [])) if x and r]
        paired = f"x{statistics.median(pairs):.3f}" if pairs else "-"
        target = TARGETS.get(name)
        tgt = (f">= {target:.2f} " + ("met" if med and base and med / base >= target else "NOT met")) \
            if target and ref == "direct" and name != ref else ""
        print(f"| {name} | {', '.join(fmt.format(x) for x in xs)} | {fmt.format(med) if med else '-'} | "
              f"{'[' + fmt.format(min(xs)) + ', ' + fmt.format(max(xs)) + ']' if xs else '-'} | {ratio} | {paired} | {tgt} |")


def engine_main(a, rest: list[str]) -> int:
    arms = [n for n in a.arms if not (n == "direct" and a.cl_gpu_override)]
    if a.engine == "mnn" and a.mnn_build:
        rest = ["--mnn-build", a.mnn_build, *rest]
    if a.model:
        rest = ["--model", a.model, *rest]
    runs: dict[str, dict[str, list]] = {n: {"decode_tps": [], "prefill_tps": [], "profile": []} for n in arms}
    deadline = threading.Event()
    if a.time_box:
        threading.Timer(a.time_box, deadline.set).start()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for k in range(a.repeat):  # interleaved, so load on the machine hits every arm alike
                if deadline.is_set():
                    print(f"  --time-box {a.time_box:.0f} s reached: the table has {k} runs per arm", flush=True)
                    break
                for name in arms:
                    try:
                        r = soak_arm(name, k, a, rest, Path(tmp))
                    except subprocess.TimeoutExpired:
                        print(f"  {name:<13} run {k}: over --timeout {a.timeout:.0f} s, left out", flush=True)
                        runs[name]["decode_tps"].append(None)
                        runs[name]["prefill_tps"].append(None)
                        continue
                    prof = "".join(f"  {ph} closure {v['closure'] or 0:.1%} rate 1 in {v['rate'] or 0:g} cost "
                                   f"{(v['cost'] or 0):.1%}" for ph, v in r["profile"].items() if isinstance(v, dict))
                    print(f"  {name:<13} run {k}: decode {r['decode_tps'] or 0:8.1f} tok/s  prefill "
                          f"{r['prefill_tps'] or 0:8.1f} tok/s  backend {r['backend']}  rc {r['rc']}{prof}", flush=True)
                    for ph, v in r["profile"].items():
                        if isinstance(v, dict) and ph != "load":
                            print(f"      {ph} ms: " + " ".join(f"{t} {x:g}" for t, x in v["terms"].items()), flush=True)
                    for key in ("decode_tps", "prefill_tps"):
                        runs[name][key].append(r[key])  # None for a failed run: rounds stay aligned
                    runs[name]["profile"].append(r["profile"])  # {} for an arm or run without one: rounds stay aligned
        except KeyboardInterrupt:  # cut short (a time box): the table of the runs done
            print("  interrupted: the table below has the runs done so far", flush=True)
    print()
    _table(f"soak run --engine {a.engine}, {a.iterations} iterations x {a.max_new_tokens} new tokens, seed {a.seed}; "
           f"median per-iteration decode tok/s of each run (first {a.skip_first} left out), runs interleaved",
           "decode tok/s", arms, {n: runs[n]["decode_tps"] for n in arms})
    for name in arms:
        profs = runs[name]["profile"]
        for ph in PHASES:
            vals = [p[ph] for p in profs if isinstance(p.get(ph), dict)]
            if not vals:
                continue
            clos = [v["closure"] for v in vals if v["closure"] is not None]
            rates = [v["rate"] for v in vals if v["rate"]]
            costs = [v["cost"] for v in vals if v["cost"] is not None]
            ok = all(abs(c - 1) <= 0.10 for c in clos)
            print(f"  {name} {ph}: closure {', '.join(f'{c:.1%}' for c in clos)} ({'all within' if ok else 'NOT all within'}"
                  f" +-10 %); kernel launches per timed one {', '.join(f'{r:g}' for r in rates)}; profiler cost "
                  f"{', '.join(f'{c:.1%}' for c in costs)} of the phase (budget {vals[0]['budget'] if vals[0]['budget'] is not None else '-'} %)")
    sampled_vs_every(arms, runs)
    return 0


def sampled_vs_every(arms: list[str], runs: dict) -> None:
    """Issue 25's table: per phase, each sampled arm's kernel device time (measured + estimated)
    against the every-launch arm's in the same round (the same seeded workload), and closures."""
    if "profile-all" not in arms:
        return
    every = runs["profile-all"]["profile"]
    for name in (n for n in arms if n.startswith("profile") and n != "profile-all"):
        print(f"\n{name} against profile-all (every launch timed), kernel device time per phase, same round:")
        print("| phase | sampled ms (each round) | every-launch ms | ratio (each round) | closure sampled | closure every |")
        print("|---|---|---|---|---|---|")
        for ph in PHASES:
            pairs = [(s.get(ph), e.get(ph)) for s, e in zip(runs[name]["profile"], every)
                     if isinstance(s.get(ph), dict) and isinstance(e.get(ph), dict)]
            pairs = [(s, e) for s, e in pairs if s.get("kernels_ns") and e.get("kernels_ns")]
            if not pairs:
                continue
            ratios = [s["kernels_ns"] / e["kernels_ns"] for s, e in pairs]
            within = "all within" if all(abs(r - 1) <= 0.10 for r in ratios) else "NOT all within"
            sampled_ms = ", ".join(f"{s['kernels_ns'] / 1e6:.1f}" for s, _ in pairs)
            every_ms = ", ".join(f"{e['kernels_ns'] / 1e6:.1f}" for _, e in pairs)
            ratio_s = ", ".join(f"x{r:.3f}" for r in ratios)
            clo_s = ", ".join(f"{s['closure']:.1%}" if s.get("closure") is not None else "-" for s, _ in pairs)
            clo_e = ", ".join(f"{e['closure']:.1%}" if e.get("closure") is not None else "-" for _, e in pairs)
            print(f"| {ph} | {sampled_ms} | {every_ms} | {ratio_s} ({within} 10 %) | {clo_s} | {clo_e} |")


def steps_ns(workload: Path, env: dict, a, run_dir: Path) -> list[float]:
    """One cl_workload run: its step times after the first, with a reader poll after each step
    (one profile window per step)."""
    from soak.cl.trace import TraceReader

    proc = subprocess.Popen([str(workload), "--steps", str(a.steps), "--step-calls", str(a.calls), "--step-kernels",
                             str(a.kernels), "--step-sync"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    reader = TraceReader(run_dir) if (run_dir / interposer.TRACE_FILE).parent.exists() else None
    ns = []
    try:
        for _ in range(a.steps):
            for line in proc.stdout:
                if line.startswith("result step "):
                    ns.append(float(line.split("ns=")[1]))
                    break
            if reader and "SOAK_CL_STATS" in env:
                reader.poll()
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.stdin.close()
        assert proc.wait(timeout=600) == 0
    finally:
        proc.kill()
    assert len(ns) == a.steps
    return ns[1:]  # the first step warms up


def synthetic_main(a) -> int:
    lib_dir, workload = build()
    real = {"real_lib": a.cl_real_lib}
    with tempfile.TemporaryDirectory() as tmp:
        envs = {}
        for name in a.arms:
            d = Path(tmp) / name
            d.mkdir()
            if name == "direct":
                envs[name] = (dict(os.environ, CL_WORKLOAD_LIB=interposer.find_real_library(a.cl_real_lib)), d)
                continue
            opts = {**real, **(profile_options(name, a) if name.startswith("profile") else {})}
            envs[name] = ({**os.environ, **interposer.prepare(opts, d, interposer_dir=lib_dir, mnn_paths=())}, d)
        if a.before_lib_dir:  # another build of the interposer (e.g. main's): its off and profiled arms
            for name, opts in (("interposer-before", {}), ("profile-before", {"profile": True, "profile_budget": 0,
                                                                             "profile_sample": a.profile_sample})):
                d = Path(tmp) / name
                d.mkdir()
                envs[name] = ({**os.environ, **interposer.prepare({**real, **opts}, d, interposer_dir=Path(a.before_lib_dir),
                                                                  mnn_paths=())}, d)
            a.arms = [*a.arms, "interposer-before", "profile-before"]
        runs: dict[str, list[float]] = {n: [] for n in a.arms}
        for k in range(a.repeat):  # interleaved, so load on the machine hits all arms alike
            for name in a.arms:
                env, d = envs[name]
                med = statistics.median(steps_ns(workload, env, a, d))
                runs[name].append(a.calls / (med / 1e9))
                print(f"  {name:<13} run {k}: {med / 1e6:8.2f} ms/step  {a.calls / (med / 1e9):10.0f} launches/s", flush=True)
        # the profiled arms' own figures, from their records: launches per timed one, cost
        for name in a.arms:
            if not name.startswith("profile"):
                continue
            if name.endswith("-before"):
                continue
            recs = []
            for p in envs[name][1].glob("cl_trace*.jsonl"):
                recs += [json.loads(x) for x in p.read_text().splitlines() if '"type":"profile"' in x]
            recs = [r for r in recs if any(c.get("kernel", "").startswith("k") for c in r.get("commands", []))]
            if recs:
                span = sum(r["host_last_ns"] - r["host_first_ns"] for r in recs)
                n = sum(c["count"] for r in recs for c in r["commands"] if c.get("kernel", "").startswith("k"))
                t = sum(c.get("timed", c["count"]) for r in recs for c in r["commands"] if c.get("kernel", "").startswith("k"))
                print(f"  {name}: {len(recs)} windows, {n / max(t, 1):.1f} launches per timed one, profiler cost "
                      f"{sum(r.get('cost_ns', 0) for r in recs) / span:.1%} of the windows' wall time")
    print()
    _table(f"cl_workload: {a.calls} tiny NDRange launches ({a.kernels} kernels) + clFinish per step, one window per "
           f"step, {interposer.find_real_library(a.cl_real_lib)}; median step of each run after the first",
           "launches/s", list(a.arms), runs, fmt="{:.0f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--kernels", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--engine", choices=("mnn", "lib"), help="measure a real MNN through `soak run` instead")
    ap.add_argument("--mnn-build", help="--engine mnn: the hand-built MNN (its build folder)")
    ap.add_argument("--model", help="the model folder (passed to soak run)")
    ap.add_argument("--cl-gpu-override", action="store_true", help="PoCL: no direct arm (MNN needs a GPU device)")
    ap.add_argument("--direct-lib-dir", help="first on LD_LIBRARY_PATH for the direct arm")
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--skip-first", type=int, default=1, help="iterations left out of each run's median (kernel builds)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per soak run")
    ap.add_argument("--time-box", type=float, default=0, help="start no new round of arms after this many seconds")
    ap.add_argument("--profile-sample", type=int, default=interposer.DEFAULT_PROFILE_SAMPLE,
                    help="the profile-fixed arm's --cl-profile-sample")
    ap.add_argument("--profile-budget", type=float, default=None,
                    help=f"the profile arm's --cl-profile-budget (default: soak's, {interposer.DEFAULT_PROFILE_BUDGET:g})")
    ap.add_argument("--keep-runs", metavar="DIR", help="--engine: copy each run's events.jsonl here")
    ap.add_argument("--arms", type=lambda t: t.split(","), default=None,
                    help=f"comma-separated, in this order, of {','.join(ARMS)} (default: direct,interposer,profile "
                         "with --engine, all without)")
    ap.add_argument("--cl-real-lib", help="the real OpenCL library (ICD loader); default: as found")
    ap.add_argument("--before-lib-dir", help="synthetic case: another interposer build's folder (e.g. main's) for "
                                             "two more interleaved arms, interposer-before and profile-before (its "
                                             "fixed 1 in --profile-sample)")
    a, rest = ap.parse_known_args()
    a.arms = a.arms or (["direct", "interposer", "profile"] if a.engine else list(ARMS))
    bad = [n for n in a.arms if n not in ARMS]
    if bad:
        ap.error(f"--arms: unknown {', '.join(bad)} (known: {', '.join(ARMS)})")
    if a.engine:
        return engine_main(a, rest + (["--cl-real-lib", a.cl_real_lib] if a.cl_real_lib else []))
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    return synthetic_main(a)


if __name__ == "__main__":
    sys.exit(main())

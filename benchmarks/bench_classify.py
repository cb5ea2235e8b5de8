"""Benchmark: classify a 1,000,000-event run folder.

    python benchmarks/bench_classify.py [--events N] [--keep DIR] [--repeat K]

Generates a realistic run (iteration, memory, fault and interposer events;
a dead-queue flood over many info tags, alloc errors with varying sizes,
crashes with different addresses, bad output, slowdowns) and times
soak.catalog.classify.classify_run on it.  Target: < 10 s on a 2-core machine.

Measured 2026-11-24 (1,000,002 events, 502 MiB, 363,138 fault events):
- this 2-vCPU AMD EPYC host, load average 2.6 (other sessions running):
  3.9 s wall best of 3 (4.97, 6.49 s), 6.7-8.8 s CPU over the two scan processes;
  at load average 5 it took 15.6 s wall (the other sessions held the CPUs);
- an idle host pinned to 2 cores (`taskset -c 0,1`, Intel Xeon, Python 3.12):
  6.6 s wall, 12 s CPU.
The scan forks one process per CPU (at most 4) above 32 MiB of events, so
the wall time is about CPU / 2 on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from soak.catalog.classify import classify_run  # noqa: E402
from soak.catalog.loader import load_catalog  # noqa: E402

TAGS = ["Raster", "BinaryOp", "UnaryOp", "While", "run3d", "run2d", "Convolution", "LayerNorm",
        "conv_2d_c4h1w1256_1_1_1_1_1_1", "setArg matmul_qk_decode", "reSetArg softmax_buf"]
WORDS = "the model runs on a small phone and answers in time while kernels build 你好 世界 🙂".split()


def generate(run_dir: Path, n_events: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"schema": 1, "run_id": run_dir.name, "backend": "opencl", "backend_actual": "opencl",
                "model": {"family": "qwen2", "params": 494_000_000, "max_position_embeddings": 32768},
                "config": {"engine_options": {"precision": "low", "memory": "low", "thread_num": 68}},
                "opencl": {"device": {"name": "Mali-G720-Immortalis MC12", "vendor": "ARM",
                                      "driver_version": "v1.r44p0"}},
                "mnn_version": "3.6.1", "os": "android"}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    seq = 0
    log_lines = []
    with open(run_dir / "events.jsonl", "w", encoding="utf-8") as out:
        def emit(event: str, **fields):
            nonlocal seq
            rec = {"event": event, "seq": seq, "t": round(seq * 0.001, 6),
                   "ts": "2026-11-24T21:00:00.000+00:00", "run_id": run_dir.name, **fields}
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            seq += 1

        emit("run_start", argv=["run"], seed=seed, engine="lib", backend="opencl", target="local")
        i = 0
        ctx = 0
        while seq < n_events:
            turn = i % 8
            ctx = 0 if turn == 0 else ctx + rng.randint(20, 120)
            cl_errors = []
            failures = []
            r = rng.random()
            if 0.30 < r < 0.55:  # dead-queue flood phase: several tags per iteration
                for tag in rng.sample(TAGS, 3):
                    cl_errors.append({"code": -36, "name": "CL_INVALID_COMMAND_QUEUE", "info": tag})
                    emit("fault", iteration=i, kind="cl_error", phase="decode", code=-36,
                         name="CL_INVALID_COMMAND_QUEUE", info=tag, line=f"CL ERROR CODE : -36, info:{tag} ",
                         count=rng.randint(1, 40), offset=rng.randint(0, 1 << 30))
                failures.append("cl_error")
            elif r < 0.60:
                size = rng.randint(1 << 10, 1 << 28)
                emit("fault", iteration=i, kind="error_line", phase="prefill", pattern="alloc_buffer_error",
                     severity="error", line=f"Alloc Buffer {size} error, code:-4", count=1, code=-4)
                failures.append("error_line")
            elif r < 0.62:
                emit("fault", iteration=i, kind="bad_output", phase="decode", symptoms=["repetition"])
                failures.append("bad_output")
            elif r < 0.625:
                addr = rng.getrandbits(48)
                emit("fault", iteration=i, kind="crash", phase="decode", signal="SIGSEGV", exit_code=-11,
                     last_lines=["Map error key_ptr == nullptr ", f"Fault addr 0x{addr:x} in /data/local/tmp/{addr % 97}/libMNN_CL.so"])
                failures.append("crash")
            elif r < 0.64:
                emit("cl_call_error", api="clEnqueueNDRangeKernel", code=-5, code_name="CL_OUT_OF_RESOURCES",
                     injected=True, call_seq=rng.randint(0, 1 << 32), iteration=i)
            prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40)))
            output = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
            emit("iteration", i=i, conversation=i // 8, turn=turn, prompt=prompt, max_new_tokens=64,
                 status=2, status_name="MAX_TOKENS_FINISHED", ok=not failures, prompt_tokens=len(prompt) // 4,
                 generated_tokens=64, prefill_us=1000, decode_us=50000, prefill_tps=4000.0,
                 decode_tps=(1300.0 if cl_errors else 550.0) + rng.random(), wall_s=0.06,
                 context_tokens=ctx, output=output, output_bytes=len(output.encode()),
                 checks={"utf8_valid": True, "empty": False, "repetition": 0.1, "garbage": 0.0},
                 cl_errors=cl_errors, error_lines=[], log_span=[0, 0], failures=failures,
                 worker_generation=0)
            emit("memory", source="iteration", iteration=i, pid=1, generation=0, rss=400_000_000 + i * 4096,
                 uss=300_000_000, pss=350_000_000, fds=12, threads=9, gpu_live_bytes=None)
            i += 1
        emit("run_end", reason="iterations", iterations=i, elapsed_s=seq * 0.001)
    log_lines.append("CL ERROR CODE : -36, info:Raster \n")
    (run_dir / "engine.log").write_text("".join(log_lines) * 1000)
    return seq


def _cpu() -> float:
    """CPU seconds of this process plus its finished children (the scan workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="DIR", help="write the run folder here and keep it (reused when present)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="soak-bench-"))
    run_dir = tmp / "bench-run"
    try:
        if args.keep and (run_dir / "events.jsonl").is_file():
            n = sum(1 for _ in open(run_dir / "events.jsonl", "rb"))
            print(f"reusing {run_dir} ({n:,} events)")
        else:
            t0 = time.perf_counter()
            n = generate(run_dir, args.events)
            print(f"generated {n:,} events in {time.perf_counter() - t0:.1f} s")
        size = (run_dir / "events.jsonl").stat().st_size
        print(f"events.jsonl: {size / 2**20:.0f} MiB; CPUs available: {len(os.sched_getaffinity(0))}; "
              f"load average now: {os.getloadavg()[0]:.1f}")
        catalog = load_catalog(ROOT / "fault_catalog")
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            c0 = _cpu()
            result = classify_run(run_dir, catalog)
            dt = time.perf_counter() - t0
            print(f"  run: {dt:.2f} s wall, {_cpu() - c0:.2f} s CPU (this process and its workers)")
            best = dt if best is None else min(best, dt)
        print(f"classify_run: {best:.2f} s for {result['events_read']:,} events read, "
              f"{result['fault_events']:,} fault events -> {len(result['findings'])} findings, "
              f"{len(result['faults'])} distinct faults")
        print(f"target < 10 s: {'MET' if best < 10 else 'MISSED'} ({best / 10:.0%} of budget)")
        return 0 if best < 10 else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

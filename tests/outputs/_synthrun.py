"""Write synthetic run folders (the ARCHITECTURE.md layout) for unit tests.

Only the fields the analyses read are filled; values follow the event table.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

MIB = 1 << 20


class _Writer:
    def __init__(self, run_dir: Path, run_id: str):
        self.run_id = run_id
        self.seq = 0
        self.t = 0.0
        self.t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.fh = (run_dir / "events.jsonl").open("w", encoding="utf-8")
        self.log = (run_dir / "engine.log").open("wb")
        self.log_pos = 0

    def emit(self, event: str, **fields) -> dict:
        rec = {"event": event, "ts": (self.t0 + timedelta(seconds=self.t)).isoformat(), "t": round(self.t, 6),
               "seq": self.seq, "run_id": self.run_id, **fields}
        self.seq += 1
        self.fh.write(json.dumps(rec) + "\n")
        return rec

    def log_lines(self, lines: list[str]) -> list[int]:
        start = self.log_pos
        data = "".join(line + "\n" for line in lines).encode()
        self.log.write(data)
        self.log_pos += len(data)
        return [start, self.log_pos]

    def close(self):
        self.fh.close()
        self.log.close()


def write_run(run_dir: Path, *, iterations: int = 120, seed: int = 7, run_id: str | None = None,
              rss: Callable[[int, random.Random], float] | None = None,
              gpu: Callable[[int, random.Random], float] | None = None,
              tps: Callable[[int, random.Random], float] | None = None,
              faults: dict[int, str] | None = None,
              recover: dict[int, tuple[str | None, list[str]]] | None = None,
              backend: str = "opencl", backend_actual: str | None = None, cpu_fallback_at: int | None = None,
              seconds_per_iteration: float = 2.0, engine: str = "test") -> Path:
    """faults: iteration -> fault kind (cl_error / error_line / crash / bad_output ...).
    recover: iteration -> (recovered_by step or None, steps tried)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = run_id or run_dir.name
    rnd = random.Random(seed)
    rss = rss or (lambda i, r: 800 * MIB + r.gauss(0, 2 * MIB))
    tps = tps or (lambda i, r: 20.0 + r.gauss(0, 0.5))
    faults = faults or {}
    recover = recover or {}
    backend_actual = backend_actual or backend
    manifest = {
        "run_id": run_id, "seed": seed, "command": ["soak", "run", "--engine", engine, "--seed", str(seed)],
        "argv": ["soak", "run", "--engine", engine, "--seed", str(seed)],
        "engine": engine, "backend": backend, "backend_actual": backend_actual,
        "versions": {"soak": "0.1.0", "mnn": "3.6.1"},
        "host": {"hostname": "ci-host", "os": "Linux", "machine": "x86_64", "cpu_count": 2,
                 "serial": "R58M123ABC"},
        "libraries": [{"path": "/opt/mnn/libllm.so", "sha256": "ab" * 32, "version": "3.6.1"}],
        "model": {"config_path": "/models/qwen/config.json", "size_bytes": 123456789,
                  "config": {"llm_model": "llm.mnn", "backend_type": backend}},
        "opencl": {"platform": "Test Platform", "device": "Adreno (TM) 740", "driver_version": "OpenCL 3.0 QUALCOMM",
                   "extensions": ["cl_khr_fp16", "cl_qcom_large_buffer"], "max_mem_alloc_size": 1 << 30},
        "target": "adb:R58M123ABC",
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    w = _Writer(run_dir, run_id)
    w.emit("run_start", argv=manifest["argv"], seed=seed, engine=engine, backend=backend, target="local")
    generation = 0
    w.emit("worker_start", pid=1000, generation=generation)
    w.emit("load", ok=True, duration_s=1.5, backend_requested=backend, backend_actual=backend_actual,
           cache="cold", status=0, error=None, log_lines=2)
    if cpu_fallback_at is not None and cpu_fallback_at < 0:
        w.emit("fault", kind="cpu_fallback", iteration=None, phase="load",
               line="Can't Find type=3 backend, use 0 instead", backend_requested=backend)
    counts: dict[str, int] = {}
    for i in range(iterations):
        w.t += seconds_per_iteration
        kind = faults.get(i)
        lines = [f"iteration {i} prefill", f"iteration {i} decode"]
        cl_errors, error_lines, failures = [], [], []
        if kind == "cl_error":
            lines.append("CL ERROR CODE : -5, info:mapBuffer")
            cl_errors = [{"code": -5, "name": "CL_OUT_OF_RESOURCES", "info": "mapBuffer"}]
        elif kind == "error_line":
            lines.append("Map error key_ptr == nullptr")
            error_lines = ["Map error key_ptr == nullptr"]
        if kind:
            failures = [kind]
        span = w.log_lines(lines)
        speed = tps(i, rnd)
        gen = 32
        w.emit("iteration", i=i, conversation=i // 4, turn=i % 4, prompt=f"prompt number {i} \"quoted\"",
               max_new_tokens=gen, status=(4 if kind in ("status_error",) else 2),
               status_name="MAX_TOKENS_FINISHED", ok=not kind, prompt_tokens=12, generated_tokens=gen,
               prefill_us=int(50000 + rnd.random() * 1000), decode_us=int(gen / speed * 1e6),
               prefill_tps=240.0, decode_tps=speed, wall_s=gen / speed + 0.05, context_tokens=12 * (i % 4 + 1),
               output="out " * 8, output_bytes=32,
               checks={"utf8_valid": True, "empty": False, "repetition": 0.0, "garbage": False},
               cl_errors=cl_errors, error_lines=error_lines, log_span=span, failures=failures,
               worker_generation=generation)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
            extra = {"cl_error": {"code": -5, "name": "CL_OUT_OF_RESOURCES", "info": "mapBuffer",
                                  "line": "CL ERROR CODE : -5, info:mapBuffer", "count": 1},
                     "error_line": {"line": "Map error key_ptr == nullptr", "pattern": "kv_map_error"},
                     "crash": {"signal": "SIGSEGV", "exit_code": None, "last_lines": lines[-2:]},
                     "bad_output": {"symptoms": ["garbage"]},
                     "status_error": {"status": 4, "status_name": "INTERNAL_ERROR"}}.get(kind, {})
            w.emit("fault", kind=kind, iteration=i, phase="decode", **extra)
        if cpu_fallback_at == i:
            w.emit("fault", kind="cpu_fallback", iteration=i, phase="load",
                   line="Can't Find type=3 backend, use 0 instead", backend_requested=backend)
        level = rss(i, rnd)
        g = gpu(i, rnd) if gpu else None
        w.emit("memory", source="iteration", iteration=i, rss=int(level), uss=int(level * 0.9), pss=int(level * 0.95),
               fds=20, threads=8, gpu_live_bytes=(int(g) if g is not None else None))
        if i in recover:
            by, steps = recover[i]
            w.t += 0.5
            if by == "restart":
                generation += 1
                w.emit("worker_exit", pid=1000 + generation - 1, generation=generation - 1, exit_code=None,
                       signal="SIGKILL", phase="reset", iteration=i)
                w.emit("worker_start", pid=1000 + generation, generation=generation)
            after = rss(i + 1, rnd)
            w.emit("recovery", iteration=i, trigger=[kind or "unknown"],
                   steps=[{"step": s, "ok": s == by, "duration_s": 0.1} for s in steps],
                   recovered_by=by, duration_s=0.1 * len(steps), rss_before=int(level), rss_after=int(after))
    w.emit("run_end", reason="iterations", iterations=iterations, elapsed_s=w.t)
    w.close()
    (run_dir / "summary.json").write_text(json.dumps({"iterations": iterations, "faults": counts}))
    return run_dir


def write_classification(run_dir: Path, findings: list[dict]) -> None:
    (Path(run_dir) / "classification.json").write_text(json.dumps({"version": 1, "findings": findings}, indent=2))

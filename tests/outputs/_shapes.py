"""Memory shapes of an LLM soak, as run folders: what the workload model must tell apart.

The workload follows soak's: conversations of a few turns, the context growing
by the prompt and the reply each turn, `reset()` between conversations.
Levels are built from figures measured on real MNN (tests/data/series/ and
issue 12): the KV growth per context token, the floor, the noise.

    clean     level = floor + kv x context: comes back at every reset (sawtooth)
    ratchet   level = floor + kv x longest context so far: never comes back
    leak      clean + a fixed loss per iteration
    step      clean + one lasting step of `step_fraction` of the floor (a pool grown once)
    ratchet_leak  ratchet + a fixed loss per iteration
    step_ratchet  clean + `step_bytes` for every threshold in `thresholds` the longest context so far has
              passed (MNN OpenCL's GPU pool on the H200: +1.04 GB once the context passed ~5.6k tokens,
              kept for good)

Noise: an AR(1) wobble (phi 0.9) plus page-granular rounding, sd `noise` bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SHAPES = ("clean", "ratchet", "leak", "step", "ratchet_leak", "step_ratchet")
EXPECTED = {"clean": {"stable"}, "ratchet": {"ratchet"}, "leak": {"leak"}, "step": {"retained", "leak"},
            "ratchet_leak": {"leak"}, "step_ratchet": {"ratchet"}}
MODEL = {"name": "shape-model", "layers": 24, "kv_heads": 2, "head_dim": 64, "max_position_embeddings": 32768,
         "config": {"precision": "low"}}   # 12 KiB/token at fp16


def write_shape(run_dir: Path, shape: str, *, seed: int = 0, iterations: int = 300, floor: float = 213e6,
                kv_per_token: float = 12288 * 1.1, leak_per_iteration: float = 100e3, step_fraction: float = 0.3,
                noise: float = 2e6, max_turns: int = 8, field: str = "rss", backend: str = "opencl",
                step_bytes: float = 0.3 * 213e6, thresholds: tuple = (1000, 2000),
                model: dict | None = None) -> Path:
    rnd = random.Random(seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": run_dir.name, "backend": backend,
                                                       "backend_actual": backend,
                                                       "model": model or MODEL}))
    lines = []
    seq = 0

    def emit(event, **kw):
        nonlocal seq
        lines.append(json.dumps({"event": event, "t": round(i * 2.0, 3) if event != "run_start" else 0.0,
                                 "seq": seq, "run_id": run_dir.name, **kw}))
        seq += 1

    i = 0
    emit("run_start", engine="shape", backend=backend)
    emit("worker_start", generation=0)
    conv = hw = 0
    ar = 0.0
    step_at = iterations // 3
    while i < iterations:
        turns = rnd.randint(1, max_turns)
        ctx = 0
        for turn in range(turns):
            if i >= iterations:
                break
            ctx += rnd.randint(20, 120) + rnd.randint(16, 400)
            hw = max(hw, ctx)
            ar = 0.9 * ar + rnd.gauss(0, noise * (1 - 0.81) ** 0.5)
            base = floor + (kv_per_token * hw if shape.startswith("ratchet") else kv_per_token * ctx)
            if shape in ("leak", "ratchet_leak"):
                base += leak_per_iteration * i
            if shape == "step_ratchet":
                base += step_bytes * sum(hw >= th for th in thresholds)
            if shape == "step" and i >= step_at:
                base += step_fraction * floor
            level = int((base + ar) // 4096 * 4096)
            emit("iteration", i=i, conversation=conv, turn=turn, context_tokens=ctx, ok=True,
                 generated_tokens=32, decode_tps=50.0, wall_s=1.0)
            emit("memory", source="iteration", iteration=i,
                 **{f: (level if f == field else None) for f in ("rss", "uss", "pss", "gpu_live_bytes")})
            i += 1
        conv += 1
    emit("run_end", reason="iterations", iterations=iterations, elapsed_s=iterations * 2.0)
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir

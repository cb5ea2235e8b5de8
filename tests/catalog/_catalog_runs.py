"""Build run folders for classifier tests: manifest.json, events.jsonl written
with soak's own EventLog (the real writer), and engine.log."""

from __future__ import annotations

import json
from pathlib import Path

from soak.events import EventLog

QWEN_0_5B_NVIDIA = {
    "run_id": "t-nvidia-qwen05",
    "backend": "opencl", "backend_actual": "opencl",
    "model": {"family": "qwen2", "params": 494_000_000, "max_position_embeddings": 32768},
    "config": {"engine_options": {"precision": "low", "memory": "low", "thread_num": 68}},
    "opencl": {"device": {"name": "NVIDIA H100 80GB HBM3", "vendor": "NVIDIA Corporation",
                          "driver_version": "580.159.04"}},
    "mnn_version": "3.6.1", "os": "linux",
}


def ctx(**changes) -> dict:
    """QWEN_0_5B_NVIDIA with top-level keys replaced (None deletes)."""
    m = json.loads(json.dumps(QWEN_0_5B_NVIDIA))
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return m


def make_run(root: Path, name: str, manifest: dict | None, events: list[tuple[str, dict]],
             engine_log: str | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    if manifest is not None:
        (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    if events is not None:
        log = EventLog(run / "events.jsonl", run_id=name)
        for event, fields in events:
            log.emit(event, **fields)
        log.close()
    if engine_log is not None:
        (run / "engine.log").write_text(engine_log, encoding="utf-8")
    return run


def iteration(i: int, turn: int = 0, context_tokens: int = 0, decode_tps: float = 500.0,
              cl_errors=(), failures=(), prompt: str = "hello", output: str = "fine") -> tuple[str, dict]:
    return ("iteration", {
        "i": i, "conversation": 0, "turn": turn, "prompt": prompt, "max_new_tokens": 32, "status": 2,
        "status_name": "MAX_TOKENS_FINISHED", "ok": not failures, "prompt_tokens": 4, "generated_tokens": 32,
        "prefill_us": 100, "decode_us": 900, "prefill_tps": 4000.0, "decode_tps": decode_tps, "wall_s": 0.01,
        "context_tokens": context_tokens, "output": output, "output_bytes": len(output.encode()),
        "checks": {"utf8_valid": True, "empty": False, "repetition": 0.0, "garbage": 0.0},
        "cl_errors": list(cl_errors), "error_lines": [], "log_span": [0, 0], "failures": list(failures),
        "worker_generation": 0})


def cl_fault(i: int, line: str, phase: str = "decode", count: int = 1) -> tuple[str, dict]:
    """A cl_error fault from a real `CL ERROR CODE : N, info:X` line."""
    from soak.logparse import parse_line

    p = parse_line(line)
    assert p and p["kind"] == "cl_error", line
    return ("fault", {"iteration": i, "kind": "cl_error", "phase": phase, "code": p["code"], "name": p["name"],
                      "info": p["info"], "line": p["line"], "count": count})


def line_fault(i: int, line: str, phase: str = "decode") -> tuple[str, dict]:
    """An error_line / cpu_fallback fault as soak.logparse reads the line."""
    from soak.logparse import parse_line

    p = parse_line(line)
    assert p, f"soak.logparse does not recognize {line!r}"
    fields = {k: v for k, v in p.items() if k not in ("kind",)}
    return ("fault", {"iteration": i, "kind": p["kind"], "phase": phase, "count": 1, **fields})


def crash(i: int, signal: str, last_lines: list[str], phase: str = "decode", exit_code: int | None = None):
    return ("fault", {"iteration": i, "kind": "crash", "phase": phase, "signal": signal,
                      "exit_code": exit_code, "last_lines": last_lines})


def finding(result: dict, kind: str, **where) -> dict:
    hits = [d for d in result["findings"] if d["kind"] == kind
            and all(d.get(k) == v for k, v in where.items())]
    assert hits, f"no {kind} finding {where} in {[(d['kind'], d['signature_text']) for d in result['findings']]}"
    return hits[0]


def ids(d: dict) -> list[str]:
    return [m["id"] for m in d["matches"]]


def near_ids(d: dict) -> list[str]:
    return [m["id"] for m in d["near_misses"]]

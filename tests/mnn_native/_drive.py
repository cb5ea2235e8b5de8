"""Drive the MNN shim through soak's ctypes loader, one step list per process.

usage: python _drive.py PLAN.json RESULTS.json

Runs in its own process so that an MNN crash is a signal the test sees, not
a dead pytest.  MNN's printf lines go to this process's stdout, unbuffered,
with a marker line before each step so a test can tell which step printed
what.  Results (one dict per step) are rewritten after every step, so they
survive a crash up to the step that crashed.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import sys
import time

import psutil

from soak.engine.loader import TEXT_CB, NativeEngine

MARK = "\x1esoak-step"


def _unbuffer_c_stdout() -> None:
    libc = ctypes.CDLL(None)
    stdout = ctypes.c_void_p.in_dll(libc, "stdout")
    libc.setvbuf(stdout, None, 2, 0)  # _IONBF


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _respond(engine: NativeEngine, prompt: bytes, max_new: int, stop_after: int | None) -> dict:
    chunks: list[bytes] = []

    def on_text(data, length, _user):
        chunks.append(ctypes.string_at(data, length))
        return 1 if stop_after is not None and len(chunks) >= stop_after else 0

    cb = TEXT_CB(on_text)
    t0 = time.perf_counter()
    rc = engine.lib.soak_engine_respond(engine.handle, prompt, len(prompt), max_new, cb, None)
    wall = time.perf_counter() - t0
    return {"rc": rc, "output_b64": base64.b64encode(b"".join(chunks)).decode(), "chunks": len(chunks),
            "wall_s": wall}


def _generate(engine: NativeEngine, max_tokens: int) -> dict:
    fn = engine.lib.soak_mnn_generate
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int32, TEXT_CB, ctypes.c_void_p]
    chunks: list[bytes] = []

    def on_text(data, length, _user):
        chunks.append(ctypes.string_at(data, length))
        return 0

    cb = TEXT_CB(on_text)
    rc = fn(engine.handle, max_tokens, cb, None)
    return {"rc": rc, "output_b64": base64.b64encode(b"".join(chunks)).decode()}


def _forward_turn(engine: NativeEngine, prompt: bytes, max_new: int, feed: list[int] | None) -> dict:
    """One turn through the oracle's forward: greedy (feed None) or teacher-forced on
    `feed`, fed as MNN's decode loop feeds (every token but a stop token goes through the
    model). Every step's logits come back as base64 float32."""
    try:
        ids = engine.tokenize(prompt)
        logits = engine.forward(ids, True)
    except Exception as exc:  # noqa: BLE001 - the test reads the message
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out, rows = [], []
    while True:
        rows.append(base64.b64encode(bytes(logits)).decode())
        if feed is not None:
            token = feed[len(out)]
        else:
            values = logits.tolist()
            token = max(range(len(values)), key=values.__getitem__)
        out.append(token)
        if engine.is_stop(token):
            break
        logits = engine.forward([token], False)
        if len(out) == (len(feed) if feed is not None else max_new):
            break
    return {"ok": True, "ids": ids, "out": out, "vocab": engine.vocab, "logits_b64": rows,
            "text_b64": base64.b64encode(b"".join(engine.token_bytes(t) for t in out)).decode()}


def main(plan_path: str, out_path: str) -> int:
    _unbuffer_c_stdout()
    plan = json.loads(open(plan_path).read())
    results: list[dict] = []
    engine: NativeEngine | None = None

    def save() -> None:
        tmp = out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f)
        os.replace(tmp, out_path)

    for n, step in enumerate(plan["steps"]):
        os.write(1, f"{MARK} {n} {step['op']}\n".encode())
        op = step["op"]
        res: dict = {"op": op}
        t0 = time.perf_counter()
        if op == "create":
            try:
                engine = NativeEngine(plan["shim"], step["config"], plan.get("plugins", []))
                res["ok"] = True
                res["name"] = engine.name
            except Exception as exc:  # noqa: BLE001 - the test reads the message
                res["ok"] = False
                res["error"] = f"{type(exc).__name__}: {exc}"
        elif op == "set_config":
            res["rc"] = engine.lib.soak_engine_set_config(engine.handle, step["json"].encode())
        elif op == "load":
            res["rc"] = engine.lib.soak_engine_load(engine.handle)
        elif op == "respond":
            res.update(_respond(engine, base64.b64decode(step["prompt_b64"]), step.get("max", 16),
                                step.get("stop_after")))
        elif op == "forward_turn":
            res.update(_forward_turn(engine, base64.b64decode(step["prompt_b64"]), step.get("max", 16),
                                     step.get("feed")))
        elif op == "forward":
            try:
                logits = engine.forward(step["ids"], step.get("prefill", False))
                res.update(ok=True, vocab=len(logits), first=logits[0])
            except Exception as exc:  # noqa: BLE001 - the test reads the message
                res.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        elif op == "generate":
            res.update(_generate(engine, step.get("max", 8)))
        elif op == "reset":
            res["rc"] = engine.lib.soak_engine_reset(engine.handle)
        elif op == "reinit":
            res["rc"] = engine.lib.soak_engine_reinit(engine.handle)
        elif op == "destroy":
            engine.close()
            engine = None
        else:
            raise SystemExit(f"unknown op {op}")
        res["step_s"] = time.perf_counter() - t0
        if engine is not None and engine.handle:
            res["status"] = engine.status()
            res["perf"] = engine.perf()
        res["rss"] = _rss()
        results.append(res)
        save()
    os.write(1, f"{MARK} end\n".encode())
    if engine is not None:
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

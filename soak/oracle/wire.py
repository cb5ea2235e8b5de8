"""The worker commands `reference` and `check`: their payloads, and what the worker does with them.

    reference <id> <b64 json {"prompt": b64, "max_new": N, "topk": K, "lib": path, "config": {...}?}>
        -> "turn": {"input_ids": b64, "steps": b64, "n": N, "end": "stop"|"length"}, "output_b64"
    check <id> <b64 json {"input_ids": b64, "steps": b64, "topk": K, "end": ..., "limits": [abs, kl],
                           "lib": path, "config": {...}?}>
        -> "oracle": the turn's summary (soak.oracle.turn), "output_b64" (the reference's text, as fed)

`config` is set first, as a respond's optional config is (the test engine's iteration).  `lib` is
libsoak_oracle.so, built by the supervisor's side before the worker starts (no build in a worker).
The candidate's logits never leave the worker: only the summary does.
"""

from __future__ import annotations

import base64
import json

from soak.oracle.native import OracleLib
from soak.oracle.reference import RefTurn, pack_ids, pack_steps, unpack_ids, unpack_steps

OPS = ("reference", "check")
_LIBS: dict[str, OracleLib] = {}


def _lib(path: str) -> OracleLib:
    if path not in _LIBS:
        _LIBS[path] = OracleLib(path)
    return _LIBS[path]


def reference_request(prompt: bytes, max_new: int, topk: int, lib: str, config: dict | None = None) -> dict:
    req = {"prompt": base64.b64encode(prompt).decode(), "max_new": int(max_new), "topk": int(topk), "lib": lib}
    if config is not None:
        req["config"] = config
    return req


def check_request(turn: RefTurn, topk: int, limits: tuple[float, float], lib: str,
                  config: dict | None = None) -> dict:
    req = {"input_ids": pack_ids(turn.input_ids), "steps": pack_steps(list(turn.steps), topk), "topk": topk,
           "end": turn.end, "limits": list(limits), "lib": lib}
    if config is not None:
        req["config"] = config
    return req


def _text(engine, tokens) -> bytes:
    return b"".join(engine.token_bytes(t) for t in tokens)


def run(engine, op: str, payload: bytes) -> dict:
    """The worker's side: run the command on the open engine; the result's extra fields.  Raises
    SoakError from the engine (the worker reports it as any engine call's error), ValueError/KeyError
    for a malformed payload (bad_command)."""
    from soak.oracle import teacher

    req = json.loads(payload)
    if req.get("config") is not None:
        engine.set_config(json.dumps(req["config"]))
    lib = _lib(req["lib"])
    if op == "reference":
        prompt = base64.b64decode(req["prompt"], validate=True)
        ids = engine.tokenize(prompt)
        turn = teacher.reference_turn(engine, lib, ids, int(req["max_new"]), int(req["topk"]))
        body = turn.tokens[:-1] if turn.end == "stop" else turn.tokens
        return {"turn": {"input_ids": pack_ids(turn.input_ids), "steps": pack_steps(list(turn.steps), int(req["topk"])),
                         "n": len(turn.steps), "end": turn.end},
                "output_b64": base64.b64encode(_text(engine, body)).decode()}
    if op == "check":
        k = int(req["topk"])
        turn = RefTurn(0, 0, 0, unpack_ids(req["input_ids"]), unpack_steps(req["steps"], k), str(req["end"]))
        limits = req.get("limits")
        if limits and (not isinstance(limits, list) or len(limits) != 2):
            raise ValueError(f"limits must be [abs_max, kl_max], not {limits!r}")
        summary = teacher.check_turn(engine, lib, turn, tuple(limits) if limits else None)
        body = turn.tokens[:-1] if turn.end == "stop" else turn.tokens
        return {"oracle": summary, "output_b64": base64.b64encode(_text(engine, body)).decode()}
    raise ValueError(f"not an oracle command: {op}")


def turn_from_result(result: dict, topk: int, where: tuple[int, int, int]) -> RefTurn:
    """The supervisor's side of `reference`: the turn the worker made."""
    t = result["turn"]
    conv, turn, iteration = where
    return RefTurn(conv, turn, iteration, unpack_ids(t["input_ids"]), unpack_steps(t["steps"], topk), t["end"])

"""Interposer trace records -> soak events (event name, fields).

    for name, fields in trace_events(reader.poll(), iteration): events.emit(name, **fields)

error          -> cl_call_error    (api, code, code_name, injected, call_seq, ...)
build_failure  -> cl_build_failure (the record's fields, call_seq)
start          -> cl_start         (the record's fields)
config_error   -> cl_config_error  (the record's fields)
Other record types (alloc, free, ...) stay in cl_trace.jsonl only.
"""

from __future__ import annotations


def trace_events(records: list[dict], iteration: int | None) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    for rec in records:
        kind = rec.get("type")
        if kind == "error":
            out.append(("cl_call_error", {
                "api": rec.get("api"), "code": rec.get("code"), "code_name": rec.get("code_name"),
                "injected": bool(rec.get("injected")), "call_seq": rec.get("seq"), "t_ns": rec.get("t_ns"),
                "call_index": rec.get("index"), "detail": rec.get("detail"), "why": rec.get("why"),
                "pid": rec.get("pid"), "iteration": iteration}))
        elif kind == "build_failure":
            fields = {k: v for k, v in rec.items() if k not in ("type", "iteration", "seq")}
            out.append(("cl_build_failure", {"iteration": iteration, "call_seq": rec.get("seq"), **fields}))
        elif kind in ("start", "config_error"):
            out.append((f"cl_{kind}", {"iteration": iteration,
                                        **{k: v for k, v in rec.items() if k not in ("type", "iteration")}}))
    return out

"""Interposer trace records -> soak events (event name, fields).

    for name, fields in trace_events(reader.poll(), iteration): events.emit(name, **fields)

error          -> cl_call_error    (one per kind of error and poll, folded by TraceReader.poll:
                                    count, first_seq, last_seq, samples, ...; call_seq, call_index)
build_failure  -> cl_build_failure (the record's fields, call_seq)
start          -> cl_start         (the record's fields)
config_error   -> cl_config_error  (the record's fields)
profile        -> cl_profile       (the record's fields; --cl-profile)
Every record field passes through (renamed where it would collide with the event's own fields), so a
field the interposer adds reaches the events.
Other record types (alloc, free, ext, exit) stay in cl_trace.jsonl only.
"""

from __future__ import annotations

# record fields renamed in events (events have their own `seq`/`type`/`iteration`, and the envelope's
# `event`, `t`, `ts` and `run_id`: a record field of one of those names would collide with it)
_RENAMED = {"seq": "call_seq", "index": "call_index", "event": "cl_event", "t": "cl_t", "ts": "cl_ts",
            "run_id": "cl_run_id"}
_DROPPED = {"type", "iteration"}
_EVENT_OF = {"error": "cl_call_error", "build_failure": "cl_build_failure", "start": "cl_start",
             "config_error": "cl_config_error", "profile": "cl_profile"}


def trace_events(records: list[dict], iteration: int | None) -> list[tuple[str, dict]]:
    """The run's events for these records (from TraceReader.poll): (event name, fields).

    Every record field passes through (seq -> call_seq, index -> call_index), so a field the
    interposer adds reaches the events without a change here:
      error          -> cl_call_error     (count, first_seq, last_seq, samples, kernel, gws, lws,
                                           param, param_name, key, detail, why, ...)
      build_failure  -> cl_build_failure
      start, config_error, profile -> cl_start, cl_config_error, cl_profile
    alloc/free/ext/exit records stay in cl_trace.jsonl only."""
    out = []
    for rec in records:
        rtype = rec.get("type")  # a record type, not a fault kind
        if rtype not in _EVENT_OF:
            continue
        fields = {_RENAMED.get(k, k): v for k, v in rec.items() if k not in _DROPPED}
        if rtype == "error":
            fields["injected"] = bool(fields.get("injected"))
            fields.setdefault("count", 1)
        name = _EVENT_OF[rtype]
        out.append((name, dict(fields, iteration=iteration)))
    return out

"""The event-type registry: every event soak writes to events.jsonl, with
its fields and their types (docs/ARCHITECTURE.md's event table says what
they mean).

The reader (soak.run_folder.reader.sanitize) drops a field whose value has
another type than declared here (a hand-edited, damaged or foreign log), so
every consumer sees it as absent instead of tripping over it; null is always
allowed.  A field not declared here is passed through unchecked: the cl_*
events carry every field of the interposer's record (soak.cl.trace_events),
so one the interposer adds reaches the events before it is declared.

tests/core/test_event_types.py fails when soak (an `emit` in soak/, a record
the interposer writes in native/interposer/) writes an event type or a field
this table lacks, or when a fault kind's field (soak.fault_kinds) is not a
field of `fault`.
"""

from __future__ import annotations

import math


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v))


def _str(v) -> bool:
    return isinstance(v, str)


def _bool(v) -> bool:
    return isinstance(v, bool)


def _dict(v) -> bool:
    return isinstance(v, dict)


def _list(v) -> bool:
    return isinstance(v, list)


def _strs(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _ints(v) -> bool:
    return isinstance(v, list) and all(_int(x) for x in v)


def _dicts(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) for x in v)


def _span(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_int(x) for x in v)


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float))


def _lines(v) -> bool:
    return isinstance(v, str) or _strs(v)


def _steps(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) and _str(x.get("step", "")) for x in v)


def _int_or_str(v) -> bool:
    return _int(v) or _str(v)


# every event: written by soak.events.EventLog
ENVELOPE_TYPES = {"event": _str, "seq": _int, "t": _num, "ts": _str, "run_id": _str}

# the fields the interposer writes on every record (native/interposer/records.c soak_json_common),
# as soak.cl.trace_events passes them on (seq -> call_seq, index -> call_index) with the run's iteration
_CL_COMMON = {"pid": _int, "call_seq": _int, "t_ns": _int, "tid": _int, "api": _str, "iteration": _int}

EVENT_TYPES: dict[str, dict] = {
    # soak.loop.runner
    "run_start": {"schema": _scalar, "argv": _strs, "seed": _scalar, "engine": _str, "backend": _str,
                  "target": _str, "run_dir": _str, "monotonic_t0": _num},
    "run_end": {"reason": _str, "iterations": _int, "elapsed_s": _num, "aborted": _bool},
    "iteration": {"i": _int, "conversation": _int, "turn": _int, "ok": _bool, "status": _int, "status_name": _str,
                  "decode_tps": _num, "prefill_tps": _num, "wall_s": _num, "engine_s": _num, "prefill_us": _num,
                  "decode_us": _num, "ttft_s": _num, "itl_p50_s": _num, "itl_p99_s": _num, "itl_max_s": _num,
                  "context_tokens": _int, "prompt": _str, "output": _str, "max_new_tokens": _int,
                  "generated_tokens": _int, "prompt_tokens": _int, "output_tokens": _list,
                  "worker_generation": _int, "log_span": _span, "failures": _strs, "cl_errors": _list,
                  "cl_call_errors": _int, "error_lines": _list, "backend_actual": _str, "output_bytes": _int,
                  "checks": _dict},
    "memory": {"source": _str, "iteration": _int, "generation": _int, "pid": _int, "rss": _num, "uss": _num,
               "pss": _num, "swap": _num, "fds": _int, "threads": _int, "gpu_live_bytes": _num,
               "gpu_bytes": _num, "meminfo": _dict, "kgsl": _dict, "thermal": _dict},
    "error": {"kind": _str, "error_type": _str, "message": _str, "hint": _str, "exit_code": _int},
    "warning": {"message": _str},
    # soak.loop.session, soak.loop.ladder
    "worker_start": {"pid": _int, "generation": _int, "runner": _str, "version": _str, "log_offset": _int},
    "worker_exit": {"pid": _int, "generation": _int, "exit_code": _int, "signal": _int_or_str, "phase": _str,
                    "iteration": _int, "reason": _str},
    "load": {"ok": _bool, "duration_s": _num, "backend_requested": _str, "backend_actual": _str, "cache": _str,
             "status": _int, "error": _str, "generation": _int, "log_span": _span, "log_lines": _int,
             "load_us": _num},
    "recovery": {"iteration": _int, "trigger": _strs, "steps": _steps, "recovered_by": _str, "duration_s": _num,
                 "rss_before": _num, "rss_after": _num},
    # soak.loop (outcomes, runner, session) and the targets: the fields of every fault kind (soak.fault_kinds)
    "fault": {"kind": _str, "phase": _str, "iteration": _int, "line": _str, "pattern": _str, "severity": _str,
              "code": _int, "name": _str, "info": _str, "count": _int, "last_lines": _lines, "backtrace": _lines,
              "signal": _int_or_str, "exit_code": _int, "timeout_s": _num, "stalled": _bool, "stall_s": _num,
              "tokens_before": _int, "elapsed_s": _num, "status": _int, "status_name": _str, "error": _str,
              "error_kind": _str, "symptoms": _strs, "requested_type": _str, "used_type": _str, "reason": _str,
              "backend_requested": _str, "decode_tps": _num, "baseline_tps": _num, "api": _str,
              "code_name": _str, "injected": _bool, "call_seq": _int, "resource": _str, "symptom": _str,
              "serial": _str, "state": _str, "boot_id_before": _str, "boot_id_after": _str, "uptime_s": _num,
              # the oracle's wrong_output / nonfinite_logits (soak.oracle.judge)
              "over": _strs, "abs_max": _num, "kl_max": _num, "first_step": _int, "worst_step": _int,
              "first_flip": _int, "flips": _int, "of_steps": _int, "steps": _int, "thresholds": _dict,
              # the loop's forward_stopped (soak.loop.runner): tok/s up right after a GPU error
              "speedup": _num, "after_iteration": _int, "after_error": _str},
    # soak.loop.oracle_turns: one teacher-forced turn's summary (soak.oracle.turn), judged
    "oracle_turn": {"i": _int, "conversation": _int, "turn": _int, "steps": _int, "flips": _int,
                    "first_flip": _int, "nonfinite_steps": _int, "first_nonfinite": _int, "first_over": _int,
                    "kl_mean": _num, "kl_max": _num, "kl_max_step": _int, "nmse_max": _num, "abs_max": _num,
                    "abs_max_step": _int, "rank_max": _int, "nll": _num, "prefill_us": _int, "decode_us": _int,
                    "input_tokens": _int, "wrong": _bool},
    # soak.targets.adb
    "device_push": {"serial": _str, "remote": _str, "bundle": _str, "pushed_files": _int, "pushed_bytes": _int,
                    "skipped_files": _int},
    # the interposer's records (native/interposer/FORMAT.md) through soak.cl.trace_events
    "cl_call_error": {**_CL_COMMON, "code": _int, "code_name": _str, "name": _str, "phase": _str,
                      "call_index": _int, "injected": _bool, "action": _str, "why": _str, "missing": _bool,
                      "detail": _str, "key": _str, "kernel": _str, "gws": _ints, "lws": _ints, "param": _int,
                      "param_name": _str, "agg": _int, "epoch": _int, "nth": _int, "count": _int, "first_seq": _int,
                      "last_seq": _int, "samples": _dicts, "cl_event": _str},
    "cl_build_failure": {**_CL_COMMON, "code": _int, "code_name": _str, "program": _str, "device_index": _int,
                         "device": _str, "status": _int, "options": _str, "log": _str, "log_truncated": _bool},
    "cl_start": {**_CL_COMMON, "version": _int, "unix_ns": _int, "real": _str, "real_ok": _bool,
                 "real_path": _str, "error": _str, "stats": _str, "faults": _str, "gpu_override": _bool,
                 "mem_limit": _int, "n_api": _int, "profile": _bool},
    "cl_config_error": {**_CL_COMMON, "what": _str, "rule": _str, "error": _str},
    "cl_profile": {**_CL_COMMON, "epoch": _int, "phase": _int, "host_first_ns": _int, "host_last_ns": _int,
                   "busy_ns": _int, "idle_ns": _int, "span_ns": _int, "sample": _int, "estimated_ns": _int,
                   "outside_ns": _int, "unestimated": _int, "untimed": _int, "failed_commands": _int, "commands": _dicts,
                   "other": _dict, "host_ns": _dict, "rate": _num, "cost_ns": _int, "cost_wall_ns": _int, "budget_pct": _num,
                   "coverage_every": _int, "queue": _str},
}

EVENT_NAMES = frozenset(EVENT_TYPES)

# the exact value types each check always accepts: the reader skips the call for them (most fields
# of most events), and calls the check for any other value (a float's finiteness, a list's items)
_ALWAYS_OK = {_int: (int,), _str: (str,), _bool: (bool,), _dict: (dict,), _list: (list,), _lines: (str,),
              _scalar: (str, int, float), _int_or_str: (int, str), _num: (int,)}
PASSING_TYPES: dict[str, dict[str, frozenset]] = {
    name: {field: frozenset(_ALWAYS_OK.get(ok, ())) for field, ok in fields.items()}
    for name, fields in EVENT_TYPES.items()}

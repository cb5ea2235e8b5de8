"""Turn what happened during one engine call into `fault` records."""

from __future__ import annotations

from soak import backtrace
from soak.fault_kinds import death_kind, is_hard  # noqa: F401  (is_hard: the loop asks it here)
from soak.loop.checks import symptoms
from soak.engine.abi import ERROR_STATUSES, STATUS_NAMES
from soak.worker.supervisor import CallOutcome


def last_lines(outcome: CallOutcome, n: int = 20) -> list[str]:
    """The call's last n engine lines, a crash's backtrace left out (it has a field of its own)."""
    return [text for text in (line.text for line in outcome.lines) if not backtrace.is_backtrace_line(text)][-n:]


def from_log(outcome: CallOutcome, phase: str) -> list[dict]:
    """cl_error / error_line / cpu_fallback faults from the engine lines of a call."""
    faults: list[dict] = []
    cl: dict[tuple, dict] = {}
    seen_patterns: dict[str, dict] = {}
    for line in outcome.lines:
        p = line.parsed
        if not p:
            continue
        if p["kind"] == "cl_error":
            key = (p["code"], p["info"])
            if key in cl:
                cl[key]["count"] += 1
            else:
                cl[key] = {"kind": "cl_error", "phase": phase, "code": p["code"], "name": p["name"],
                           "info": p["info"], "line": p["line"], "count": 1, "offset": line.offset}
                faults.append(cl[key])
        elif p["kind"] == "cpu_fallback":
            faults.append({"kind": "cpu_fallback", "phase": phase, "line": p["line"],
                           "requested_type": p["requested_type"], "used_type": p["used_type"],
                           "offset": line.offset})
        elif p["kind"] == "error_line" and p["severity"] != "info":
            if p["pattern"] in seen_patterns:
                seen_patterns[p["pattern"]]["count"] += 1
                continue
            rec = {"kind": "error_line", "phase": phase, "pattern": p["pattern"], "severity": p["severity"],
                   "line": p["line"], "count": 1, "offset": line.offset}
            if "code" in p:
                rec["code"] = p["code"]
            seen_patterns[p["pattern"]] = rec
            faults.append(rec)
    return faults


def from_outcome(outcome: CallOutcome, phase: str, timeout_s: float) -> list[dict]:
    faults = from_log(outcome, phase)
    if outcome.died and outcome.lost:
        pass  # the target reports the device going offline itself
    elif outcome.died:
        death = {"kind": death_kind(outcome.signal), "phase": phase, "signal": outcome.signal,
                 "exit_code": outcome.exit_code, "last_lines": last_lines(outcome)}
        # the crashing thread's frames: soak's handler (symbolized here, where the modules
        # are), or the device's tombstone
        frames = backtrace.crash_backtrace((line.text for line in outcome.lines), outcome.local_file)
        if frames:
            death["backtrace"] = frames
        faults.append(death)
    elif outcome.hung:
        hang = {"kind": "hang", "phase": phase, "timeout_s": timeout_s, "last_lines": last_lines(outcome)}
        if outcome.stalled:  # the stall timer, not the whole-call timeout
            hang.update(stalled=True, stall_s=outcome.stall_limit_s, tokens_before=outcome.tokens,
                        elapsed_s=round(outcome.elapsed_s, 3))
        faults.append(hang)
    elif outcome.result is not None:
        status = outcome.result.get("status")
        if status in ERROR_STATUSES:
            faults.append({"kind": "status_error", "phase": phase, "status": status,
                           "status_name": STATUS_NAMES.get(status, str(status))})
        elif not outcome.result.get("ok"):
            faults.append({"kind": "engine_error", "phase": phase, "error": outcome.result.get("error"),
                           "error_kind": outcome.result.get("error_kind")})
    return faults


def from_output(checks: dict, phase: str) -> list[dict]:
    found = symptoms(checks)
    return [{"kind": "bad_output", "phase": phase, "symptoms": found}] if found else []

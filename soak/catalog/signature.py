"""Stable signatures for failures, so that a thousand identical failures are
one finding, across runs and machines.

A signature is built from the fault kind, the phase, and a key: the first CL
code (by name) and info tag, the signal, and the first error lines, with
numbers, addresses, hex, timestamps, logcat prefixes and paths stripped.
The readable text is kept; the id is a hash of it (`sig-<12 hex>`).
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from soak import backtrace, fault_kinds, signals
from soak.catalog._clcodes import CL_ERROR_NAMES, code_name
from soak.engine.abi import STATUS_NAMES
from soak.logparse import first_cl_error, first_error_lines

# Bump when normalization changes: signatures of one scheme are comparable
# across runs and machines, not across schemes (as Sentry versions grouping).
SIGNATURE_SCHEME = 3  # 2: one log parser (soak.logparse) picks a crash's error lines; 3: a crash with a
#                        native backtrace is titled by its first frame outside libc, the loader and soak

_LOGCAT_THREADTIME = re.compile(r"^\s*\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*?:\s")
_LOGCAT_BRIEF = re.compile(r"^\s*[VDIWEF]/[^:(]+(?:\(\s*\d+\))?:\s")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?|\b\d\d:\d\d:\d\d(?:\.\d+)?\b")
_DMESG = re.compile(r"^\s*\[\s*\d+\.\d+\]\s*")
# absolute or relative paths with at least one separator -> basename
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/]?[\w.\-+@~]+)?(?:[\\/][\w.\-+@~]+)+[\\/]?")
_HEX = re.compile(r"\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_STATUS = re.compile(r"(Status:\s*)(-?\d)\b")
_NEG = re.compile(r"(?<![\w.])-(\d+)\b")
_NUM = re.compile(r"\d+")
_WS = re.compile(r"\s+")


def _basename(m: re.Match) -> str:
    text = m.group(0).rstrip("/\\")
    # a ratio like 3/4 or a date is not a path; keep it numeric-normalized
    base = re.split(r"[\\/]", text)[-1]
    return base or "PATH"


def _neg(m: re.Match) -> str:
    code = -int(m.group(1))
    return CL_ERROR_NAMES[code] if code in CL_ERROR_NAMES and code != 0 else "-N"


@lru_cache(maxsize=65536)
def normalize_line(text: str) -> str:
    """Strip what changes between runs and machines from one log line.

    Known negative CL codes become their names (they tell faults apart);
    other numbers, `0x...` and long hex (addresses, build ids) become N (an
    address may print with or without letters, so the two must agree); paths
    become their file name; logcat/dmesg prefixes and timestamps go.
    """
    s = text.replace("\x00", "").strip()
    # each rule runs only when its cheap precondition holds (this is on the
    # hot path of a 1M-event classification)
    if s[:1].isdigit():
        s = _LOGCAT_THREADTIME.sub("", s)
    if s[1:2] == "/":
        s = _LOGCAT_BRIEF.sub("", s)
    if s[:1] == "[":
        s = _DMESG.sub("", s)
    if ":" in s:
        s = _TIMESTAMP.sub("", s)
    s = _HEX.sub("N", s)
    if "/" in s or "\\" in s:
        s = _PATH.sub(_basename, s)
        s = _HEX.sub("N", s)
    if "Status:" in s:
        s = _STATUS.sub(lambda m: m.group(1) + STATUS_NAMES.get(int(m.group(2)), "N"), s)
    if "-" in s:
        s = _NEG.sub(_neg, s)
    s = _NUM.sub("N", s)
    s = _WS.sub(" ", s).strip()
    return s[:200]


@lru_cache(maxsize=65536)
def normalize_tag(info: str) -> str:
    """An MNN info tag.  Tuned kernel names carry their shape
    (conv_2d_c4h1w1256_1_1_1_1_1_1): with three or more numbers the numbers
    go; a name like run3d / run2d keeps them (they are different kernels)."""
    tag = _WS.sub(" ", info.strip())[:120]
    return _NUM.sub("N", tag) if len(_NUM.findall(tag)) >= 3 else tag


signal_name = signals.name  # 11, "11", "segv", "SIGSEGV" -> "SIGSEGV" (one spelling per signal)


def _cl_part(code, info) -> str:
    part = code_name(code)
    return part if info is None else f"{part} info:{normalize_tag(info)}"


def _err_part(lines) -> str:
    errs = [normalize_line(x) for x in first_error_lines(lines, 2)]
    return " / ".join(errs)


def param_of(ev: dict) -> str | None:
    """The queried param of a failing clGet*Info: its name, else the
    interposer's key `param=0x..` (when no header names it)."""
    name = ev.get("param_name")
    if isinstance(name, str) and name:
        return name
    key = ev.get("key")
    return key[6:] if isinstance(key, str) and key.startswith("param=") else None


def crash_frame(ev: dict, lines: list[str] | None = None) -> str | None:
    """The frame that titles a crash: from its `backtrace` (a run's crash event), else from
    frame lines among its last lines (a raw log's crash, a run recorded before backtraces)."""
    bt = ev.get("backtrace")
    if isinstance(bt, list) and bt:
        return backtrace.title_frame(str(x) for x in bt)
    if lines is None:
        lines = ev.get("last_lines") or []
        lines = lines.splitlines() if isinstance(lines, str) else lines
    return backtrace.title_frame(str(x) for x in lines) if isinstance(lines, list) else None


def fault_key(kind: str, ev: dict) -> str:
    """The normalized key of one fault (without kind and phase): what its
    registry row's `key` (soak.fault_kinds.KEYS) says tells faults apart."""
    key = fault_kinds.key_of(kind)
    if key == "cl":
        return _cl_part(ev.get("code"), str(ev.get("info") or ""))
    if key == "call":
        injected = " (injected)" if ev.get("injected") else ""
        param = f" {param_of(ev)}" if param_of(ev) else ""
        # a silent fault the interposer injected (skip, corrupt) returned CL_SUCCESS: its action tells it
        action = ev.get("action") if ev.get("action") in ("skip", "corrupt") else None
        return f"{ev.get('api') or '?'}{param} {action or code_name(ev.get('code'))}{injected}"
    if key == "line":
        return normalize_line(str(ev.get("line") or ev.get("pattern") or ""))
    if key in ("death", "stall"):
        lines = ev.get("last_lines") or []
        if isinstance(lines, str):
            lines = lines.splitlines()
        lines = [str(x) for x in lines] if isinstance(lines, list) else []
        parts = []
        if key == "death":
            sig = signal_name(ev.get("signal"))
            frame = crash_frame(ev, lines)
            if frame and sig:
                return f"{sig} in {frame}"  # syzkaller's title: the frame tells crashes apart
            parts.append(sig if sig else f"exit {ev.get('exit_code')}")
        first = first_cl_error(lines)
        if first:
            parts.append(_cl_part(first[0], first[1]))
        err = _err_part(lines)
        if err:
            parts.append(err)
        return " | ".join(parts)
    if key == "error":
        return f"{ev.get('error_kind') or ''} {normalize_line(str(ev.get('error') or ''))}".strip()
    if key == "status":
        return str(ev.get("status_name") or ev.get("status"))
    if key == "symptoms":
        return "+".join(sorted(ev.get("symptoms") or []))
    if key == "resource":
        return str(ev.get("resource"))
    if key == "symptom":
        return str(ev.get("symptom"))
    return ""


def signature_text(kind: str, phase: str | None, key: str) -> str:
    head = f"{kind}/{phase or '?'}"
    return f"{head}: {key}" if key else head


def signature_id(text: str) -> str:
    return "sig-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def signature(kind: str, phase: str | None, ev: dict) -> tuple[str, str]:
    """(id, readable text) of one fault event."""
    text = signature_text(kind, phase, fault_key(kind, ev))
    return signature_id(text), text

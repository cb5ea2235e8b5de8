"""Engine logs soak did not record: `llm_demo` / `llm_bench` stdout, a
`logcat` dump (threadtime or brief format, MNN's tag MNNJNI), an
`adb bugreport` text.  Bug reports from the field are mostly such logs.

`read(path)` gives the engine's own lines (logcat prefixes cut, other apps'
lines dropped), a crash record for each fatal signal with the lines around
it, and the context the log tells: model, backend, device, Android version.
What it could not read is listed too.  MNN prints no version of its own, so
the MNN version is read only from a bugreport's package list or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from soak.backtrace import HEADER as BACKTRACE_HEADER
from soak.backtrace import parse_line as parse_frame
from soak.errors import BadInput
from soak.logparse import parse_line

# logcat -v threadtime:  "12-01 03:04:05.678  1234  1240 I MNNJNI  : CL ERROR CODE : -5, info:Raster"
THREADTIME_RE = re.compile(
    r"^(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+(?:\S+\s+)?(\d+)\s+(\d+)\s+([VDIWEFA])\s+(.*?)\s*: (.*)$")
# logcat -v brief:  "I/MNNJNI  ( 1234): CL ERROR CODE : -5, info:Raster"
BRIEF_RE = re.compile(r"^([VDIWEFA])/([^:(]*?)\s*(?:\(\s*(\d+)\))?:\s?(.*)$")
# bugreport sections and `getprop` lines
BUGREPORT_RE = re.compile(r"^== dumpstate: |^------ SYSTEM LOG \(|^Bugreport format version: ")
GETPROP_RE = re.compile(r"^\[([\w.\-]+)\]: \[(.*)\]\s*$")

MNN_TAG = "MNNJNI"
# tags that carry a native crash of the engine's process
CRASH_TAGS = ("libc", "DEBUG", "crash_dump64", "crash_dump32", "tombstoned")
_SIGNAL_RE = re.compile(r"\bsignal (\d+) \((SIG\w+)\)|Fatal signal (\d+) \((SIG\w+)\)|\b(SIG(?:SEGV|ABRT|BUS|ILL|FPE))\b"
                        r"|^(Segmentation fault)|^(Aborted)")
# other tags kept: the OpenCL driver and the linker (why a library did not load)
_DRIVER_TAG_RE = re.compile(r"(?i)adreno|mali|opencl|^linker$|^CL\b|pocl|nvidia")
_BACKTRACE_RE = re.compile(r"^\s*#\d+ (?:pc|fo) [0-9a-f]+\s")  # a tombstone's frames; soak's crash handler's
_GDB_FRAME_RE = re.compile(r"^#\d+\s+(?:0x[0-9a-f]+ in )?\S+ \(")  # gdb's `bt` pasted after the crash
# llm_demo / llm_bench / pymnn lines that show the text is an MNN log even without faults
_MNN_MARKERS = re.compile(r"^config path is |^The device supports: |^\[MNNLLM\]|^prefill speed = |^ decode speed = "
                          r"|^\| model +\| |^Prepare for tuning opt |^load tokenizer|^load [\w/.-]+ \.\.\. Done")
_FORWARD = {"0": "cpu", "1": "metal", "2": "cuda", "3": "opencl", "6": "opengl", "7": "vulkan"}


@dataclass
class RawLog:
    path: Path
    format: str                               # llm_stdout | logcat-threadtime | logcat-brief | bugreport
    lines: list = field(default_factory=list)  # [(offset, text)], the engine's lines
    crashes: list = field(default_factory=list)  # [{offset, signal, last_lines, backtrace}]
    context: dict = field(default_factory=dict)
    context_missing: list = field(default_factory=list)
    total_lines: int = 0


def read(path: Path, strict: bool = True) -> RawLog:
    """strict: a file given to triage (empty or binary is bad input); not
    strict: a run folder's own engine.log, whatever the engine wrote."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", hint="give a readable log file or a run folder")
    head = data[:65536]
    if strict and not data.strip():
        raise BadInput(f"{path} is empty", hint="give an llm_demo/llm_bench output, a logcat dump or a bugreport")
    if strict and (b"\x00" in head or head.decode("utf-8", "replace").count("\ufffd") > len(head) // 20):
        raise BadInput(f"{path} is a binary file, not a log",
                       hint="give an llm_demo/llm_bench output, a logcat dump (adb logcat -d) or a bugreport text")
    text = data.decode("utf-8", "replace")
    raw = text.splitlines(keepends=True)
    fmt = _detect(raw[:2000])
    log = RawLog(path=path, format=fmt, total_lines=len(raw))
    props: dict[str, str] = {}
    offset = 0
    recent: list[str] = []
    pending_crash: dict | None = None
    for full in raw:
        line = full.rstrip("\r\n")
        here = offset
        offset += len(full.encode("utf-8", "replace"))
        msg, tag = _message(line, fmt)
        if fmt == "bugreport":
            m = GETPROP_RE.match(line)
            if m:
                props[m.group(1)] = m.group(2)
                continue
        if msg is None:
            continue
        if pending_crash is not None:
            if (_BACKTRACE_RE.match(msg) or tag in CRASH_TAGS or _GDB_FRAME_RE.match(msg)
                    or BACKTRACE_HEADER.search(msg)):
                if parse_frame(msg) is not None:  # every frame, however long the report before it
                    pending_crash["backtrace"].append(msg)
                pending_crash["last_lines"].append(msg)
                pending_crash["end"] = here
                if len(pending_crash["last_lines"]) < 60 or parse_frame(msg) is not None:
                    continue
            pending_crash = None
        sig = _SIGNAL_RE.search(msg) if (tag is None or tag in CRASH_TAGS or tag == MNN_TAG) else None
        if sig is not None and (tag in CRASH_TAGS or tag is None and _crash_line(msg)):
            name = next((g for g in sig.groups()[1::1] if g and g.startswith("SIG")), None)
            if name is None and msg.startswith("Segmentation fault"):
                name = "SIGSEGV"
            elif name is None and msg.startswith("Aborted"):
                name = "SIGABRT"
            last = log.crashes[-1] if log.crashes else None
            if last is not None and last["signal"] in (name, None) and here - last["end"] < 65536:
                pending_crash = last  # the tombstone of the crash libc announced
                last["last_lines"].append(msg)
                last["signal"] = last["signal"] or name
            else:
                pending_crash = {"offset": here, "signal": name, "last_lines": recent[-20:] + [msg], "backtrace": []}
                log.crashes.append(pending_crash)
            pending_crash["end"] = here
            continue
        if tag is not None and tag != MNN_TAG and not _DRIVER_TAG_RE.search(tag):
            continue
        log.lines.append((here, msg))
        recent.append(msg)
        if len(recent) > 40:
            del recent[:20]
    log.context, log.context_missing = _context(log, props)
    return log


def _detect(head: list[str]) -> str:
    if any(BUGREPORT_RE.match(x) for x in head):
        return "bugreport"
    tt = sum(1 for x in head if THREADTIME_RE.match(x))
    br = sum(1 for x in head if BRIEF_RE.match(x))
    if tt and tt >= br:
        return "logcat-threadtime"
    if br:
        return "logcat-brief"
    return "llm_stdout"


def _message(line: str, fmt: str) -> tuple[str | None, str | None]:
    """(message, logcat tag) of one line; (None, None) for a logcat line of
    no interest; tag None for plain stdout."""
    if fmt == "llm_stdout":
        return line, None
    m = THREADTIME_RE.match(line)
    if m:
        return m.group(5), m.group(4).strip()
    m = BRIEF_RE.match(line)
    if m:
        return m.group(4), m.group(2).strip()
    return (None, None) if fmt in ("bugreport", "logcat-threadtime", "logcat-brief") else (line, None)


def _crash_line(msg: str) -> bool:
    # the shell's words, libc's, and gdb's ("Thread 7 "x" received signal SIGSEGV, ...")
    return bool(re.match(r"^(Segmentation fault|Aborted|Fatal signal|Bus error|Illegal instruction"
                         r"|(?:Thread \d+ .*|Program) received signal SIG|Program terminated with signal SIG"
                         r"|\*\*\* soak: fatal signal)", msg))


def _context(log: RawLog, props: dict) -> tuple[dict, list[str]]:
    ctx: dict = {}
    opencl_seen = False
    bench_head: list[str] | None = None  # llm_bench's markdown table header
    for _off, msg in log.lines:
        if msg.startswith("config path is "):
            cfg = msg[len("config path is "):].strip()
            ctx["model_path"] = cfg
            parts = [p for p in re.split(r"[\\/]", cfg) if p]
            if len(parts) >= 2:
                ctx["model_name"] = parts[-2]
        rec = parse_line(msg)
        if rec is not None and rec["kind"] == "cpu_fallback" and rec.get("used_type") is not None:
            ctx["backend"] = _FORWARD.get(str(rec["requested_type"]), str(rec["requested_type"]))
            ctx["backend_actual"] = _FORWARD.get(str(rec["used_type"]), str(rec["used_type"]))
        if msg.startswith("| ") and "backend" not in ctx:
            cells = [c.strip() for c in msg.strip().strip("|").split("|")]
            if bench_head is None and "model" in cells and "backend" in cells:
                bench_head = cells
            elif bench_head and len(cells) == len(bench_head) and not set(cells[0]) <= set("-: "):
                row = dict(zip(bench_head, cells))
                ctx.setdefault("model_name", row.get("model"))
                ctx["backend"] = ctx["backend_actual"] = row.get("backend", "").lower() or None
        if not opencl_seen:
            opencl_seen = rec is not None and rec["kind"] == "cl_error" and rec["info"] not in ("getPlatform",)
    if opencl_seen and "backend" not in ctx:
        ctx["backend"] = ctx["backend_actual"] = "opencl"  # MNN printed OpenCL errors: the backend ran
    if props:
        ctx["os"] = "android"
        if props.get("ro.product.model"):
            ctx["device_model"] = props["ro.product.model"]
        if props.get("ro.build.version.release"):
            ctx["android_version"] = props["ro.build.version.release"]
        egl = props.get("ro.hardware.egl")  # the GL/CL driver family: adreno, mali, ...
        if egl:
            ctx["gpu_vendor"] = egl
        if props.get("ro.board.platform"):
            ctx["board"] = props["ro.board.platform"]
    elif log.format.startswith("logcat"):
        ctx["os"] = "android"
    missing = [k for k in ("model_name", "backend", "gpu_vendor", "gpu_model", "mnn_version", "os") if not ctx.get(k)]
    return ctx, missing


def looks_like_engine_log(log: RawLog) -> bool:
    if log.crashes:
        return True
    for _off, msg in log.lines:
        if _MNN_MARKERS.search(msg) or parse_line(msg) is not None:
            return True
    return False

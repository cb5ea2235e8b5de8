"""Read the interposer's trace while the worker runs, or after it crashed.

Two files in the run folder (format: native/interposer/FORMAT.md):
  cl_trace.jsonl         records, one JSON object per line, appended with one write(2) each
  cl_trace.<pid>.stats   fixed-layout counters, mmap'd by the worker (one per worker process)

    reader = open_trace(run_dir)
    new = reader.poll()          # records written since the last poll (complete lines only)
    snap = reader.stats()        # newest worker's counters, or None before the first CL call
    reader.live_bytes()          # GPU bytes the engine holds now (buffers+images+pipes+SVM)

One-liner:  python -c "from soak.cl.trace import open_trace as o; import json; r=o('logs/RUN'); \
            print(json.dumps(r.poll(), indent=1)); print(json.dumps(r.stats(), indent=1))"
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from soak.errors import BadInput

TRACE_FILE = "cl_trace.jsonl"
STATS_PATTERN = "cl_trace.%p.stats"
STATS_MAGIC = b"SOAKCLS1"

_HDR = struct.Struct("<8s6I20Q")  # 192 bytes
_HDR_FIELDS = ("pid", "start_mono_ns", "start_unix_ns", "calls", "errors", "injected", "records",
               "records_dropped", "live_bytes", "peak_live_bytes", "mem_limit", "flags", "untracked_releases")
_KIND = struct.Struct("<24s6Q")  # 72 bytes
_KIND_FIELDS = ("live", "live_bytes", "created", "released", "bytes_created", "peak_live")
_API = struct.Struct("<64s4Q")  # 96 bytes
FLAG_OVERRIDE, FLAG_REAL_LOADED, FLAG_EXITED = 1, 2, 4


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def read_stats(path: str | os.PathLike) -> dict | None:
    """Parse one stats file.  None when the worker has not initialised it yet.

    Raises BadInput for a file that is not a soak stats file."""
    data = Path(path).read_bytes()
    if len(data) < _HDR.size or b"\0" in data[:8]:
        return None  # created, not yet initialised (the magic is written last)
    head = _HDR.unpack_from(data, 0)
    magic, version, header_size, n_kinds, kind_size, n_api, api_size = head[:7]
    if magic != STATS_MAGIC:
        raise BadInput(f"{path} is not a soak interposer stats file (bad magic)",
                       "pass the run folder; stats files are cl_trace.<pid>.stats")
    if version != 1 or kind_size < _KIND.size or api_size < _API.size:
        raise BadInput(f"{path}: stats format version {version} is not supported by this soak",
                       "read it with the soak version that wrote it")
    need = header_size + n_kinds * kind_size + n_api * api_size
    if len(data) < need:
        raise BadInput(f"{path} is truncated ({len(data)} of {need} bytes)", "the file was cut; nothing to read")
    out: dict = dict(zip(_HDR_FIELDS, head[7:7 + len(_HDR_FIELDS)]))
    out["path"] = str(path)
    flags = out["flags"]
    out["gpu_override"] = bool(flags & FLAG_OVERRIDE)
    out["real_loaded"] = bool(flags & FLAG_REAL_LOADED)
    out["exited"] = bool(flags & FLAG_EXITED)
    objects = {}
    off = header_size
    for _ in range(n_kinds):
        vals = _KIND.unpack_from(data, off)
        objects[_name(vals[0])] = dict(zip(_KIND_FIELDS, vals[1:]))
        off += kind_size
    api = {}
    for _ in range(n_api):
        name, calls, errors, injected, _res = _API.unpack_from(data, off)
        if calls or errors:
            api[_name(name)] = {"calls": calls, "errors": errors, "injected": injected}
        off += api_size
    out["objects"] = objects
    out["api"] = api
    return out


def read_records(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int, int]:
    """Records from byte `offset`: (records, new offset, corrupt lines skipped).

    Only complete lines are read; a partial last line (the writer was cut off,
    or is writing now) stays for the next call.  Invalid bytes become U+FFFD."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset, 0
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset, 0
    records, corrupt = [], 0
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            corrupt += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            corrupt += 1
    return records, offset + end + 1, corrupt


class TraceReader:
    """Incremental reader of one run folder's interposer trace."""

    def __init__(self, run_dir: str | os.PathLike, trace_file: str = TRACE_FILE):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / trace_file
        self.offset = 0
        self.corrupt = 0

    def poll(self) -> list[dict]:
        """Records appended since the last poll (complete lines only)."""
        records, self.offset, bad = read_records(self.path, self.offset)
        self.corrupt += bad
        return records

    def stats_files(self) -> list[Path]:
        return sorted(self.run_dir.glob("cl_trace.*.stats"))

    def all_stats(self) -> list[dict]:
        """Every worker process's counters, oldest first."""
        out = []
        for p in self.stats_files():
            try:
                snap = read_stats(p)
            except (OSError, BadInput):
                continue
            if snap:
                out.append(snap)
        return sorted(out, key=lambda s: s["start_unix_ns"])

    def stats(self) -> dict | None:
        """The newest worker process's counters (None before its first OpenCL call)."""
        snaps = self.all_stats()
        return snaps[-1] if snaps else None

    def live_bytes(self) -> int | None:
        snap = self.stats()
        return snap["live_bytes"] if snap else None


def open_trace(run_dir: str | os.PathLike) -> TraceReader:
    return TraceReader(run_dir)


def live_objects(records: list[dict]) -> dict[str, dict]:
    """Memory objects alive after these records (alloc minus free), keyed by address:
    which buffer leaked, with its size, flags and the call that made it."""
    live: dict[str, dict] = {}
    current_pid = None
    for rec in records:
        t = rec.get("type")
        if t == "start":
            current_pid = rec.get("pid")
            live = {k: v for k, v in live.items() if v.get("pid") != current_pid}
        elif t == "alloc":
            live[f"{rec.get('pid')}:{rec['obj']}"] = rec
        elif t == "free":
            live.pop(f"{rec.get('pid')}:{rec['obj']}", None)
    return live

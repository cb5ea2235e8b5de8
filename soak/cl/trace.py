"""Read the interposer's trace while the worker runs, or after it crashed.

Two files in the run folder (format: native/interposer/FORMAT.md):
  cl_trace.jsonl         records, one JSON object per line, appended with one write(2) each
  cl_trace.<pid>.stats   fixed-layout counters, mmap'd by the worker (one per worker process)

    reader = open_trace(run_dir)
    new = reader.poll()          # records written since the last poll (complete lines only), with
                                 # the errors of each kind folded into one record with an exact count
    raw = reader.poll_raw()      # the same without folding (the file's lines as written)
    snap = reader.stats()        # newest worker's counters, or None before the first CL call
    reader.live_bytes()          # GPU bytes the engine holds now (buffers+images+pipes+SVM)

One-liner:  python -c "from soak.cl.trace import open_trace as o; import json; r=o('logs/RUN'); \
            print(json.dumps(r.poll(), indent=1)); print(json.dumps(r.stats(), indent=1))"
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

from soak.cl import stats_layout
from soak.errors import BadInput
from soak.phases import PROFILE_PHASE_CODE, PROFILE_PHASES
from soak.run_folder import CL_STATS_GLOB, CL_STATS_PATTERN as STATS_PATTERN, CL_TRACE as TRACE_FILE

# the stats file's layout: native/interposer/stats_layout.h, read by soak.cl.stats_layout
_LAYOUT = stats_layout.load()
STATS_MAGIC = _LAYOUT.define("SOAK_STATS_MAGIC").encode()
STATS_VERSION = _LAYOUT.define("SOAK_STATS_VERSION")
_HDR = _LAYOUT.struct("soak_stats_header")
_KIND = _LAYOUT.struct("soak_stats_kind")
_API = _LAYOUT.struct("soak_stats_api")
_AGG = _LAYOUT.struct("soak_stats_agg")
# the header fields a snapshot reports
_HDR_FIELDS = ("pid", "start_mono_ns", "start_unix_ns", "calls", "errors", "injected", "records",
               "records_dropped", "live_bytes", "peak_live_bytes", "mem_limit", "flags", "untracked_releases",
               "epoch", "n_agg", "agg_size", "agg_used", "agg_overflow")
_V2_FIELDS = ("epoch", "n_agg", "agg_size", "agg_used", "agg_overflow")  # zero in a version 1 file
EPOCH_OFFSET = _HDR.offset("epoch")  # u64 the reader writes: the interposer's error-sample window (FORMAT.md)
AGG_USED, AGG_INJECTED = _LAYOUT.define("SOAK_AGG_USED"), _LAYOUT.define("SOAK_AGG_INJECTED")
SAMPLES = _LAYOUT.define("SOAK_AGG_SAMPLES")  # error records the interposer writes per kind and epoch
_SAMPLE_FIELDS = ("seq", "index", "t_ns", "tid", "detail", "gws", "lws")
_KIND_FIELDS = tuple(n for n in _KIND.names() if n != "name")
FLAG_OVERRIDE, FLAG_REAL_LOADED, FLAG_EXITED = (_LAYOUT.define(f"SOAK_STATS_FLAG_{n}")
                                                for n in ("OVERRIDE", "REAL_LOADED", "EXITED"))


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def read_stats(path: str | os.PathLike) -> dict | None:
    """Parse one stats file.  None when the worker has not initialised it yet.

    Raises BadInput for a file that is not a soak stats file."""
    data = Path(path).read_bytes()
    if len(data) < _HDR.size or b"\0" in data[:8]:
        return None  # created, not yet initialised (the magic is written last)
    head = _HDR.unpack(data, 0)
    magic, version, header_size = head["magic"], head["version"], head["header_size"]
    n_kinds, kind_size, n_api, api_size = head["n_kinds"], head["kind_size"], head["n_api"], head["api_size"]
    if magic != STATS_MAGIC:
        raise BadInput(f"{path} is not a soak interposer stats file (bad magic)",
                       f"pass the run folder; stats files are {STATS_PATTERN.replace('%p', '<pid>')}")
    if not 1 <= version <= STATS_VERSION or kind_size < _KIND.size or api_size < _API.size:
        raise BadInput(f"{path}: stats format version {version} is not supported by this soak",
                       "read it with the soak version that wrote it")
    need = header_size + n_kinds * kind_size + n_api * api_size
    if len(data) < need:
        raise BadInput(f"{path} is truncated ({len(data)} of {need} bytes)", "the file was cut; nothing to read")
    out: dict = {k: head[k] for k in _HDR_FIELDS}
    if version == 1:
        for k in _V2_FIELDS:
            out[k] = 0
    out["path"] = str(path)
    flags = out["flags"]
    out["gpu_override"] = bool(flags & FLAG_OVERRIDE)
    out["real_loaded"] = bool(flags & FLAG_REAL_LOADED)
    out["exited"] = bool(flags & FLAG_EXITED)
    objects = {}
    off = header_size
    for _ in range(n_kinds):
        vals = _KIND.unpack(data, off)
        objects[_name(vals["name"])] = {k: vals[k] for k in _KIND_FIELDS}
        off += kind_size
    api = {}
    for _ in range(n_api):
        e = _API.unpack(data, off)
        if e["calls"] or e["errors"]:
            api[_name(e["name"])] = {"calls": e["calls"], "errors": e["errors"], "injected": e["injected"]}
            if e["host_ns"]:  # profiling on
                api[_name(e["name"])]["host_ns"] = e["host_ns"]
        off += api_size
    out["objects"] = objects
    out["api"] = api
    name_at = header_size + n_kinds * kind_size + _API.offset("name")
    name_len = _API.field("name").size
    api_names = [_name(data[name_at + i * api_size:name_at + i * api_size + name_len]) for i in range(n_api)]
    agg = []
    n_agg, agg_size = out["n_agg"], out["agg_size"]
    if n_agg and agg_size >= _AGG.size and len(data) >= off + n_agg * agg_size:
        for i in range(n_agg):
            a = _AGG.unpack(data, off + i * agg_size)
            if not a["flags"] & AGG_USED or not a["count"]:
                continue
            api_id = a["api"]
            agg.append({"slot": i, "api": api_names[api_id] if api_id < n_api else f"#{api_id}", "code": a["code"],
                        "code_name": _name(a["code_name"]), "injected": bool(a["flags"] & AGG_INJECTED),
                        "key": _name(a["key"]), "count": a["count"], "first_seq": a["first_seq"],
                        "last_seq": a["last_seq"], "last_t_ns": a["last_t_ns"], "epoch": a["epoch"],
                        "epoch_count": a["epoch_count"]})
    out["agg"] = agg
    return out


def set_epoch(path: str | os.PathLike, epoch: int) -> bool:
    """Start a new error-sample window in one worker's stats file (the interposer writes the
    first SAMPLES errors of each kind per window as records, and counts the rest)."""
    try:
        with open(path, "r+b") as f:
            f.seek(EPOCH_OFFSET)
            f.write(_HDR.pack_field("epoch", epoch))
        return True
    except OSError:
        return False


PHASE_OFFSET = _HDR.offset("phase")  # u64 phase in the stats header, written by the worker (PhaseMarker)
# the phase codes of the stats header and of `profile` records (FORMAT.md): soak.phases
PHASES, PHASE_CODE = PROFILE_PHASES, PROFILE_PHASE_CODE


class PhaseMarker:
    """Tells the interposer loaded in this process which phase the engine is in, so that its
    --cl-profile windows (one `profile` record each) end at phase boundaries too: one 8-byte
    pwrite into this process's stats file per mark.  No stats file (no interposer, or no
    SOAK_CL_STATS): marks do nothing."""

    def __init__(self, pattern: str | None = None, pid: int | None = None):
        pattern = pattern if pattern is not None else os.environ.get("SOAK_CL_STATS", "")
        self.path = pattern.replace("%p", str(pid if pid is not None else os.getpid())) if pattern else ""
        self._fd = -1
        self._ino = None
        self.phase = None
        self._now = None  # the loaded interposer's soak_interposer_phase_now, once found
        self._own = pid is None or pid == os.getpid()  # marks for this process: its interposer may act on them

    def _phase_now(self):
        """The interposer's entry point that acts on a mark at once, if this process loaded it
        (the engine dlopened "libOpenCL.so", which is the interposer when soak intercepts)."""
        if self._now is None:
            from soak.cl.interposer import LIBRARY_NAME  # here: that module imports this one
            try:
                lib = ctypes.CDLL(LIBRARY_NAME, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
                self._now = lib.soak_interposer_phase_now
            except (OSError, AttributeError):
                return None  # not loaded yet (asked again at the next mark), or not the interposer
            self._now.restype, self._now.argtypes = None, []
        return self._now

    def _open(self) -> int:
        try:
            st = os.stat(self.path)
        except OSError:
            return -1
        if st.st_ino != self._ino:  # first mark, or the interposer started a new file
            if self._fd >= 0:
                os.close(self._fd)
            self._fd, self._ino = -1, None
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                return -1
            if os.pread(fd, len(STATS_MAGIC), 0) != STATS_MAGIC or os.fstat(fd).st_size < _HDR.size:
                os.close(fd)  # not initialised yet: the interposer maps it at the first CL call
                return -1
            self._fd, self._ino = fd, st.st_ino
        return self._fd

    def mark(self, phase: str) -> bool:
        """The engine enters `phase` (a PHASE_CODE name) now."""
        if not self.path:
            return False
        fd = self._open()
        if fd < 0:
            return False
        try:
            os.pwrite(fd, _HDR.pack_field("phase", PHASE_CODE[phase]), PHASE_OFFSET)
        except OSError:
            return False
        self.phase = phase
        if phase == "idle" and self._own and (now := self._phase_now()) is not None:
            now()  # the window that ended is written while the engine waits, not in the next one's first call
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._ino = -1, None


def _error_key(rec: dict) -> tuple:
    return (rec.get("pid"), rec.get("api"), rec.get("code"), bool(rec.get("injected")), rec.get("key", ""))


def fold_errors(records: list[dict], slots: dict[tuple, dict] | None = None,
                instances: dict | None = None) -> list[dict]:
    """Fold the `error` records of one window into one record per kind of error (pid, entry
    point, code, injected, key), in the place of its first record; other records pass unchanged.

    slots: {(pid, start unix_ns, slot): {"delta": occurrences since the last window, **slot
    fields}} from the stats files; a kind's `count` comes from its slot when there is one (exact:
    the interposer writes only the first few records of a kind per window), else from its
    records.  instances: {pid: unix_ns of its current library load}, updated from `start`
    records (a process may load the library more than once).  Each folded record has count,
    first_seq, last_seq and up to SAMPLES samples."""
    slots = dict(slots or {})
    instances = {} if instances is None else instances
    out: list[dict] = []
    groups: dict[tuple, dict] = {}
    for rec in records:
        if rec.get("type") == "start":
            instances[rec.get("pid")] = rec.get("unix_ns")
        if rec.get("type") != "error":
            out.append(rec)
            continue
        slot = rec.get("agg")
        skey = (rec.get("pid"), instances.get(rec.get("pid")), slot)
        key = skey if slot is not None and skey in slots else _error_key(rec)
        g = groups.get(key)
        if g is None:
            g = {k: v for k, v in rec.items() if k not in ("agg", "epoch", "nth")}
            g["count"], g["first_seq"], g["samples"] = 0, rec.get("seq"), []
            groups[key] = g
            out.append(g)
        g["count"] += 1
        g["last_seq"] = rec.get("seq")
        if len(g["samples"]) < SAMPLES:
            sample = {k: rec[k] for k in _SAMPLE_FIELDS if k in rec}
            if "gws" in sample or sample.get("detail") == g.get("detail"):
                sample.pop("detail", None)  # kernel + sizes say it, or the folded record does
            g["samples"].append(sample)
    for key, g in list(groups.items()):
        info = slots.pop(key, None)
        if info is None:
            continue
        if info["delta"] <= 0:  # samples of errors counted in an earlier window
            out.remove(g)
            continue
        g["count"] = info["delta"]
        g["last_seq"] = info["last_seq"]
    for (pid, _inst, _slot), info in sorted(slots.items(), key=lambda kv: kv[1]["last_seq"]):
        if info["delta"] <= 0:
            continue
        # counted, but every record of it fell in an earlier window (or was over the record cap)
        out.append({"type": "error", "pid": pid, "seq": info["last_seq"], "t_ns": info["last_t_ns"],
                    "api": info["api"], "code": info["code"], "code_name": info["code_name"],
                    "injected": info["injected"], "key": info["key"], "count": info["delta"], "first_seq": None,
                    "last_seq": info["last_seq"], "samples": []})
    return _merge_loads(out)


def _merge_loads(records: list[dict]) -> list[dict]:
    """One record per kind of error in a window, also where the process loaded the library more than
    once in it (the engine reloaded OpenCL: each load counts in its own slots): counts add up."""
    out: list[dict] = []
    first: dict[tuple, dict] = {}
    for rec in records:
        if rec.get("type") != "error":
            out.append(rec)
            continue
        key = _error_key(rec)
        g = first.get(key)
        if g is None:
            first[key] = rec
            out.append(rec)
            continue
        g["count"] += rec["count"]
        seqs = [q for q in (g.get("first_seq"), rec.get("first_seq")) if q is not None]
        g["first_seq"] = min(seqs) if seqs else None
        g["last_seq"] = max(q for q in (g.get("last_seq"), rec.get("last_seq")) if q is not None)
        g["samples"] = (g.get("samples") or []) + (rec.get("samples") or [])
        del g["samples"][SAMPLES:]
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
        self.epoch = 0
        self._agg_seen: dict[tuple, int] = {}  # (pid, library load, slot) -> count seen
        self._instances: dict = {}  # pid -> unix_ns of the library load its records come from

    def poll_raw(self) -> list[dict]:
        """Records appended since the last poll (complete lines only), as written."""
        records, self.offset, bad = read_records(self.path, self.offset)
        self.corrupt += bad
        return records

    def poll(self) -> list[dict]:
        """Records appended since the last poll, each kind of error folded into one record with
        its exact count (fold_errors); then a new sample window starts in every worker."""
        records = self.poll_raw()
        slots: dict[tuple, dict] = {}
        self.epoch += 1
        for path in self.stats_files():
            try:
                snap = read_stats(path)
            except (OSError, BadInput):
                continue
            if not snap:
                continue
            for a in snap["agg"]:
                key = (snap["pid"], snap["start_unix_ns"], a["slot"])
                delta = a["count"] - self._agg_seen.get(key, 0)
                self._agg_seen[key] = a["count"]
                slots[key] = dict(a, delta=delta)
            if snap["n_agg"] and not snap["exited"]:
                set_epoch(path, self.epoch)
        return fold_errors(records, slots, self._instances)

    def stats_files(self) -> list[Path]:
        return sorted(self.run_dir.glob(CL_STATS_GLOB))

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

"""The run folder (logs/<run-id>/): the one module that owns it.

Everything that writes or reads a run folder goes through here:
- the file names (`EVENTS`, `MANIFEST`, ...);
- the schema version, written in `run_start` and in manifest.json and checked
  on read: a folder written by a newer major version is bad input (exit 3);
- atomic JSON writes (`write_json`): temporary file in the same folder,
  fsync, rename, fsync of the folder; a failure is a clear error, never half
  a file;
- what a run folder is (`is_run_folder`, `require`);
- the event reader (`read_events`), streaming, with one rule for damaged
  lines (below);
- whether a run is still being written (`state`), from `run_end` and the lock
  the writer holds (`WriterLock`).

Damaged lines.  soak's EventLog writes one whole line per event and flushes
it, so a killed writer leaves at most one unterminated last line: that line
is dropped (counted in `EventReader.truncated_tail`).  Any other line that is
not one JSON object is damage: by default it stops the reader with BadInput
naming file:line (exit 3); with strict=False it is counted and its line
numbers kept (`EventReader.damaged`) for the caller to report.  A line of a
kind the caller did not ask for is not decoded (most of a long run is
`iteration` and `memory` events); it is still checked for the shape EventLog
writes (`{"event": "<kind>", ... }` with no second record glued to it), so
damage there is reported too.

Judging commands (classify, gate, report, bundle) read a run folder and write
only their own outputs: `CLASSIFICATION`, `GATE`, the report and the bundle.
`VERDICTS` is written by `soak run` (and by `soak report` when missing).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path
from typing import Iterator

from soak.errors import BadInput

# --- names ---------------------------------------------------------------------
EVENTS = "events.jsonl"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
VERDICTS = "verdicts.json"
CLASSIFICATION = "classification.json"
GATE = "gate.json"                 # `soak gate` / `soak run --gate`: the rules and their results
GATE_JUNIT = "gate-junit.xml"
ENGINE_LOG = "engine.log"
LOCK = "run.lock"                  # held (flock) by the writer while the run is going on

# --- schema ----------------------------------------------------------------------
# major.minor.  A new minor adds fields readers may ignore; a new major changes
# the meaning of existing ones, so an older soak refuses to read it.
SCHEMA_MAJOR = 1
SCHEMA_MINOR = 1
SCHEMA = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"

RUNNING, COMPLETE, ENDED_WITHOUT_RUN_END = "running", "complete", "ended_without_run_end"


def schema_major(value) -> int | None:
    """The major version of a `schema` field: "1.1" -> 1, 1 -> 1 (folders
    before the minor number); None when absent or unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)(?:\.\d+)?\s*", value)
        return int(m.group(1)) if m else None
    return None


def check_schema(value, where: str) -> None:
    """BadInput when `value` names a newer major schema than this soak reads."""
    major = schema_major(value)
    if major is not None and major > SCHEMA_MAJOR:
        raise BadInput(f"{where} was written with run-folder schema {value}; this soak reads schema "
                       f"{SCHEMA_MAJOR}.x", hint="upgrade soak (pip install -U soak) to read this run folder")


# --- writing -----------------------------------------------------------------------
def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` atomically with `data`: a crash leaves the old file or
    the new one, never half of one.  An OS failure (disk full, read-only
    folder) is BadInput naming the file; the old file is kept."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
        raise BadInput(f"cannot write {path}: {reason}",
                       hint="free disk space or make the folder writable, then run the command again") from None


def write_json(path: str | Path, data) -> None:
    """Write `data` as indented JSON atomically (write_bytes).  NaN and
    infinities become null: JSON has no such numbers."""
    text = json.dumps(finite(data), indent=2, ensure_ascii=False, allow_nan=False, default=str) + "\n"
    write_bytes(path, text.encode("utf-8", "surrogatepass"))


def finite(obj):
    """obj with every NaN/infinity as None (JSON has no such numbers; open interval ends become null)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


class WriterLock:
    """The lock a run's writer holds while the run goes on: RUN/run.lock,
    flock'ed exclusively, holding the writer's pid.  `state()` reads a run
    whose lock nobody holds and that has no run_end as ended without one."""

    def __init__(self, run_dir: str | Path):
        import fcntl

        self.path = Path(run_dir) / LOCK
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise BadInput(f"{self.path.parent} is being written by another soak run",
                           hint="give this run another --run-id") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _lock_held(run_dir: Path) -> bool:
    import fcntl

    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if we got it
    return False


# --- what a run folder is ----------------------------------------------------------
def is_run_folder(path: str | Path) -> bool:
    """A folder with an event log: what `soak run` writes."""
    path = Path(path)
    return path.is_dir() and (path / EVENTS).is_file()


def is_classifiable(path: str | Path) -> bool:
    """A run folder, or a folder holding only an engine log (a raw `llm_demo`
    log), which the classifier also reads."""
    path = Path(path)
    return is_run_folder(path) or (path.is_dir() and (path / ENGINE_LOG).is_file())


def require(path: str | Path) -> Path:
    """`path` as a run folder, or BadInput saying why it is not one.  Checks
    the schema of manifest.json (the events' run_start is checked as it is read)."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"run folder {path} does not exist",
                       hint="pass a folder written by `soak run`, e.g. logs/<run-id>")
    if not (path / EVENTS).is_file():
        raise BadInput(f"{path} has no {EVENTS}, so it is not a soak run folder",
                       hint="pass a folder written by `soak run`, e.g. logs/<run-id>")
    try:
        manifest = read_json(path / MANIFEST)
    except BadInput:
        return path  # damaged: a reader that needs it says so; the classifier works without it
    if manifest is not None:
        check_schema(manifest.get("schema"), str(path / MANIFEST))
    return path


def read_json(path: str | Path) -> dict | None:
    """A JSON object file of the folder; None when absent; BadInput when damaged."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8", "surrogatepass"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{path} is not valid JSON ({exc})",
                       hint="the run folder is damaged; re-run `soak run`, or delete the file "
                            "if it is optional (summary.json, verdicts.json, classification.json)") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path} does not hold a JSON object", hint="the run folder is damaged")
    return data


def events_path(run: str | Path) -> Path:
    run = Path(run)
    return run / EVENTS if run.is_dir() else run


# --- field types ----------------------------------------------------------------------
# The types of the fields the analyses, gate, classifier, bundle and report
# read (docs/ARCHITECTURE.md's event table).  The reader drops a field whose
# value has another type (a hand-edited, damaged or foreign log), so every
# consumer sees it as absent instead of tripping over it; `sanitize` counts them.
def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v))


def _str(v) -> bool:
    return isinstance(v, str)


def _bool(v) -> bool:
    return isinstance(v, bool)


def _strs(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _span(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_int(x) for x in v)


def _dicts(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) for x in v)


def _list(v) -> bool:
    return isinstance(v, list)


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float))


def _lines(v) -> bool:
    return isinstance(v, str) or _strs(v)


def _steps(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) and _str(x.get("step", "")) for x in v)


_ENVELOPE_TYPES = {"event": _str, "seq": _int, "t": _num, "ts": _str, "run_id": _str}
FIELD_TYPES: dict[str, dict] = {
    "run_start": {"seed": _scalar, "backend": _str, "engine": _str, "target": _str, "schema": _scalar},
    "worker_start": {"generation": _int, "pid": _int, "log_offset": _int},
    "load": {"ok": _bool, "backend_actual": _str, "backend_requested": _str, "log_span": _span, "status": _int,
             "generation": _int, "duration_s": _num, "error": _str},
    "iteration": {"i": _int, "conversation": _int, "turn": _int, "ok": _bool, "status": _int, "status_name": _str,
                  "decode_tps": _num, "prefill_tps": _num, "wall_s": _num, "prefill_us": _num, "decode_us": _num,
                  "context_tokens": _int, "prompt": _str, "output": _str, "max_new_tokens": _int,
                  "generated_tokens": _int, "prompt_tokens": _int, "worker_generation": _int, "log_span": _span,
                  "failures": _strs, "cl_errors": _list, "error_lines": _list, "backend_actual": _str,
                  "output_bytes": _int, "checks": lambda v: isinstance(v, dict)},
    "memory": {"source": _str, "iteration": _int, "generation": _int, "rss": _num, "uss": _num, "pss": _num,
               "gpu_live_bytes": _num, "pid": _int},
    "fault": {"kind": _str, "phase": _str, "iteration": _int, "line": _str, "code": _int, "info": _str,
              "count": _int, "last_lines": _lines, "signal": lambda v: _int(v) or _str(v), "symptoms": _strs,
              "api": _str, "exit_code": _int, "status": _int, "status_name": _str, "pattern": _str,
              "injected": _bool, "resource": _str, "symptom": _str, "error": _str, "name": _str},
    "cl_call_error": {"api": _str, "code": _int, "phase": _str, "iteration": _int, "injected": _bool, "name": _str},
    "recovery": {"trigger": _strs, "steps": _steps, "recovered_by": _str, "duration_s": _num, "rss_before": _num,
                 "rss_after": _num, "iteration": _int},
    "run_end": {"iterations": _int, "elapsed_s": _num, "reason": _str},
}


def sanitize(ev: dict) -> int:
    """Drop, in place, the fields of `ev` whose value has the wrong type
    (FIELD_TYPES); returns how many were dropped."""
    dropped = 0
    for key, ok in _ENVELOPE_TYPES.items():
        if key in ev and not ok(ev[key]):
            del ev[key]
            dropped += 1
    types = FIELD_TYPES.get(ev.get("event"))
    if types:
        for key, ok in types.items():
            if key in ev and ev[key] is not None and not ok(ev[key]):
                del ev[key]
                dropped += 1
    return dropped


# --- reading events ------------------------------------------------------------------
_PREFIX = b'{"event": "'
_KIND_RE = re.compile(rb'"event"\s*:\s*"([^"\\]*)"')


def bad_shape(raw: bytes) -> bool:
    """The cheap check of a line in EventLog's layout that is not decoded: it
    must end with "}" and hold no second record (a quote inside a JSON string
    is escaped, so `{"event": "` cannot occur inside one)."""
    if not raw.endswith(b"}\n") and not raw.rstrip().endswith(b"}"):
        return True
    return raw.find(_PREFIX, 1) >= 0


class DamagedEvents(BadInput):
    """A damaged line in events.jsonl (exit 3); `line` is its number."""

    def __init__(self, message: str, hint: str | None = None, line: int = 0):
        super().__init__(message, hint)
        self.line = line


def damaged_line_error(path: Path, number: int) -> BadInput:
    return DamagedEvents(f"{path}:{number}: damaged event line (not one JSON object)",
                    hint="the run folder was damaged; re-run `soak run`, or remove that line to read the rest", line=number)


def line_number(path: Path, offset: int) -> int:
    """The 1-based number of the line that starts at byte `offset`."""
    n = 1
    with open(path, "rb") as fh:
        done = 0
        while done < offset:
            chunk = fh.read(min(1 << 20, offset - done))
            if not chunk:
                break
            n += chunk.count(b"\n")
            done += len(chunk)
    return n


class EventReader:
    """Iterate the events of a run folder (or of an events.jsonl path) in file
    order, one line at a time: memory stays flat whatever the file size.

    kinds: yield only these event types (others are checked, not decoded).
    strict: a damaged line is BadInput (default) or counted (`damaged`).
    skip: optional `skip(kind: bytes, raw: bytes) -> bool` for lines in
    EventLog's layout: True means "not needed decoded" (a streaming
    reduction that counts or thins); the line is checked like any line not
    decoded.
    The file is read up to its size when iteration starts, so a running
    writer's later events are not read half-written.
    """

    MAX_DAMAGED_KEPT = 20

    def __init__(self, run: str | Path, kinds=None, strict: bool = True, skip=None):
        self.path = events_path(run)
        self.kinds = None if kinds is None else frozenset(kinds)
        self._kinds_b = None if kinds is None else frozenset(k.encode() for k in kinds)
        self.strict = strict
        self.skip = skip
        self.lines = 0
        self.damaged_count = 0
        self.damaged: list[int] = []      # line numbers (first MAX_DAMAGED_KEPT)
        self.truncated_tail = False
        self.fields_dropped = 0           # fields of the wrong type (sanitize)
        if not self.path.is_file():
            raise BadInput(f"no event log at {self.path}",
                           hint="pass a run folder written by `soak run` (logs/<run-id>)")

    def _damage(self, number: int) -> None:
        if self.strict:
            raise damaged_line_error(self.path, number)
        self.damaged_count += 1
        if len(self.damaged) < self.MAX_DAMAGED_KEPT:
            self.damaged.append(number)

    def report(self) -> str | None:
        """One line about the damaged lines, or None when there were none."""
        if not self.damaged_count:
            return None
        shown = ", ".join(str(n) for n in self.damaged)
        more = "" if self.damaged_count <= len(self.damaged) else ", ..."
        return f"{self.path}: {self.damaged_count} damaged line(s) skipped (line {shown}{more})"

    def __iter__(self) -> Iterator[dict]:
        loads = _loads
        kinds_b = self._kinds_b
        skip = self.skip
        kinds = self.kinds
        try:
            fh = open(self.path, "rb")
        except OSError as exc:
            raise BadInput(f"cannot read {self.path}: {exc.strerror}", hint="check the file's permissions") from None
        with fh:
            remaining = os.fstat(fh.fileno()).st_size
            number = 0
            for raw in fh:
                if remaining <= 0:
                    break
                number += 1
                last = len(raw) >= remaining
                if last:
                    raw = raw[:remaining]
                remaining -= len(raw)
                if last and not raw.endswith(b"\n"):  # unterminated: cut by a kill, or being written now
                    ev = self._decode(raw, loads)
                    if ev is None:
                        self.truncated_tail = bool(raw.strip())
                    else:
                        self.fields_dropped += sanitize(ev)
                        if kinds is None or ev.get("event") in kinds:
                            yield ev
                    break
                if (kinds_b is not None or skip is not None) and raw.startswith(_PREFIX):
                    kind = raw[11:raw.find(b'"', 11)]
                    if (kinds_b is not None and kind not in kinds_b) or (skip is not None and skip(kind, raw)):
                        if bad_shape(raw):
                            self._damage(number)
                        continue
                if not raw.strip():
                    continue
                ev = self._decode(raw, loads)
                if ev is None:
                    self._damage(number)
                else:
                    self.fields_dropped += sanitize(ev)
                    if kinds is None or ev.get("event") in kinds:
                        yield ev
            self.lines = number

    @staticmethod
    def _decode(raw: bytes, loads):
        try:
            ev = loads(raw)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError (a kill can cut a UTF-8 character)
            return None
        return ev if isinstance(ev, dict) else None


_raw_decode = json.JSONDecoder().raw_decode


def _loads(raw: bytes):
    """json.loads of one line, without its encoding detection (events are UTF-8)."""
    text = raw.decode("utf-8")
    obj, end = _raw_decode(text, len(text) - len(text.lstrip()))
    if text[end:].strip():
        raise ValueError("extra data after the JSON value")
    return obj


def loads_line(raw: bytes):
    """One event line as a dict, fields unchecked (sanitize them), or None
    when it is not one JSON object."""
    return EventReader._decode(raw, _loads)


def decode_line(raw: bytes):
    """One event line as a dict (fields of the wrong type dropped), or None
    when it is not one JSON object."""
    ev = EventReader._decode(raw, _loads)
    if ev is not None:
        sanitize(ev)
    return ev


def read_events(run: str | Path, kinds=None, strict: bool = True) -> Iterator[dict]:
    """The events of a run folder, streaming (EventReader)."""
    return iter(EventReader(run, kinds, strict))


def has_run_end(run: str | Path, tail_bytes: int = 1 << 16) -> bool:
    """Whether the event log holds a run_end: read from the end (run_end is
    the last event soak writes), then the whole file if the tail has none."""
    path = events_path(run)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - tail_bytes))
            tail = fh.read()
    except OSError:
        return False
    if _tail_has_run_end(tail):
        return True
    if size <= tail_bytes:
        return False
    return any(True for _ in EventReader(path, {"run_end"}, strict=False))


def _tail_has_run_end(tail: bytes) -> bool:
    for raw in tail.split(b"\n"):
        m = _KIND_RE.search(raw[:200])
        if m and m.group(1) == b"run_end":
            try:
                if isinstance(json.loads(raw), dict):
                    return True
            except ValueError:
                continue
    return False


def state(run: str | Path) -> str:
    """RUNNING (no run_end, its writer holds the lock), COMPLETE (run_end
    written) or ENDED_WITHOUT_RUN_END (no run_end and nobody writing: killed,
    or the machine went down)."""
    run = require(run)
    if has_run_end(run):
        return COMPLETE
    return RUNNING if _lock_held(run) else ENDED_WITHOUT_RUN_END


# --- one pass, many readers, both cores -------------------------------------------------
class Damaged(Exception):
    """Raised by a line reducer's feed for a line it cannot decode (reduce_lines names file:line)."""


PARALLEL_MIN_BYTES = 32 << 20   # below this, one process is faster than two
_MAKE = None                    # the reducer factory of the reduce_lines in progress (inherited by forked workers)


def reduce_lines(run: str | Path, make, jobs: int | None = None) -> list:
    """One streaming pass over events.jsonl feeding several readers at once.

    `make()` returns a list of reducers, each with `feeder(start)` ->
    `feed(kinds, lines)` (called for each chunk of the part that starts at
    byte `start`, in file order: the raw event lines, without their newline,
    and the event type of each, as bytes; raise Damaged(line) for a line
    that cannot be decoded) and `merge(other)` (append the reducer of the
    next part of the file).  A file of PARALLEL_MIN_BYTES or more is
    split at line boundaries over `jobs` forked processes (default: the CPUs
    this process may use, at most 4), each with its own reducers, and the
    parts merged in order; returns the (merged) reducers.

    The rules are EventReader's: the file is read up to its size when the
    pass starts; an unterminated last line that is not one JSON object is
    dropped; any other damaged line (not in EventLog's shape, or a reducer
    raising Damaged) is BadInput naming file:line.
    """
    global _MAKE
    path = events_path(run)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadInput(f"no event log at {path}" if not path.exists() else f"cannot read {path}: {exc.strerror}",
                       hint="pass a run folder written by `soak run` (logs/<run-id>)") from None
    if jobs is None:
        jobs = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 4)
    ranges = _split(path, size, jobs) if jobs > 1 and size >= PARALLEL_MIN_BYTES and _forkable() else [(0, size)]
    parts = None
    if len(ranges) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        _MAKE = make
        try:
            with ProcessPoolExecutor(max_workers=len(ranges), mp_context=mp.get_context("fork")) as pool:
                parts = list(pool.map(_reduce_part, [(path, a, b, size) for a, b in ranges]))
        except (OSError, RuntimeError):  # no processes here (sandbox): do it inline
            parts = None
        finally:
            _MAKE = None
    if parts is None:
        parts = [_feed_range(path, a, b, size, make()) for a, b in ranges]
    for got in parts:
        if isinstance(got, tuple):  # ("damaged", byte offset of the line)
            raise damaged_line_error(path, line_number(path, got[1]))
    merged = parts[0]
    for part in parts[1:]:
        for mine, theirs in zip(merged, part):
            mine.merge(theirs)
    return merged


def _forkable() -> bool:
    """Workers are forked: not from a process with other threads running (a
    forked child could inherit a lock held by one of them), nor where fork is missing."""
    import multiprocessing as mp
    import threading

    return threading.active_count() == 1 and "fork" in mp.get_all_start_methods()


def _split(path: Path, size: int, parts: int) -> list[tuple[int, int]]:
    step = max(size // parts, 1)
    edges = [min(k * step, size) for k in range(parts)] + [size]
    return [(edges[k], edges[k + 1]) for k in range(parts) if edges[k] < edges[k + 1]]


def _reduce_part(args):
    path, start, end, size = args
    return _feed_range(path, start, end, size, _MAKE())


_CHUNK = 1 << 20  # 1 MiB: split into lines while it is in the cache


def _feed_range(path: Path, start: int, end: int, size: int, reducers: list):
    """Feed the lines whose first byte lies in [start, end) to the reducers,
    a chunk at a time: feed(kinds, lines), each line without its newline,
    blank lines and a cut last line left out; the reducers, or ("damaged",
    offset).  EventLog's shape is one record per line ending with "}": the
    end is checked per line, the one record per chunk (every `{"event": "`
    of a chunk must start one of its lines), and a chunk that fails is
    searched for its first glued line."""
    feeds = [r.feeder(start) for r in reducers]
    prefix = _PREFIX
    raw = last = b""
    lines: list = []
    try:
        for chunk, last in _chunks(path, start, end, size):
            lines = chunk.split(b"\n")
            if last is not None:  # the unterminated last line of the file
                lines.append(last)
            kinds = []
            put = kinds.append
            other = 0     # lines not in EventLog's layout (or left out)
            for raw in lines:
                if raw.startswith(prefix):
                    put(raw[11:raw.find(b'"', 11)])
                    if raw[-1:] != b"}" and bad_shape(raw + b"\n"):
                        if raw is last and decode_line(raw) is None:
                            kinds[-1] = None  # cut by a kill: left out
                            continue
                        raise Damaged(raw)
                else:
                    other += 1
                    if not raw.strip():
                        put(None)
                        continue
                    ev = decode_line(raw)
                    if ev is None:
                        if raw is last:
                            put(None)
                            continue
                        raise Damaged(raw)
                    kind = ev.get("event")
                    put(kind.encode() if isinstance(kind, str) else b"")
            if chunk.count(prefix) + (last.count(prefix) if last else 0) != len(lines) - other:
                raise Damaged(_glued(lines, len(lines)))
            if None in kinds:  # blank lines, the cut last line
                keep = [k for k, kind in enumerate(kinds) if kind is not None]
                kinds, lines = [kinds[k] for k in keep], [lines[k] for k in keep]
            for feed in feeds:
                feed(kinds, lines)
    except Damaged as exc:
        raw = exc.args[0] if exc.args else raw
        raw = _glued(lines, lines.index(raw) if raw in lines else len(lines)) or raw
        if raw is last and raw.find(_PREFIX, 1) < 0:
            return reducers  # the unterminated last line, cut by a kill: dropped
        return ("damaged", _offset_of(path, start, raw))
    return reducers


def _glued(lines: list, before: int):
    """The first of lines[:before] holding a second record, or None."""
    for raw in lines[:before]:
        if raw.find(_PREFIX, 1) >= 0:
            return raw
    return None


def _chunks(path: Path, start: int, end: int, size: int):
    """(whole lines joined by newlines, without the last newline; None) for
    the lines whose first byte lies in [start, end), the file read no
    further than `size`; at the file's end, (b"", its unterminated last line)
    when there is one."""
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            fh.readline()  # finish the line that straddles `start`
        base = pos = fh.tell()  # base: the file offset of buf[0]
        buf = b""
        while base < end:
            data = fh.read(min(_CHUNK, size - pos)) if pos < size else b""
            pos += len(data)
            if not data:  # the end of the file as of `size`
                if buf:
                    yield b"", buf
                return
            buf = buf + data if buf else data
            cut = buf.rfind(b"\n")
            if cut < 0:
                continue
            whole = buf[:cut]
            if base + cut + 1 >= end:  # the next line starts at or after `end`: the part ends in here
                j = whole.find(b"\n", max(end - base - 1, 0))
                yield (whole if j < 0 else whole[:j]), None
                return
            yield whole, None
            base += cut + 1
            buf = buf[cut + 1:]


def feed_range(path: str | Path, reducers: list, start: int = 0, end: int | None = None) -> list:
    """reduce_lines' part of the work for bytes [start, end) of one file, in this process."""
    path = Path(path)
    size = path.stat().st_size
    got = _feed_range(path, start, size if end is None else end, size, reducers)
    if isinstance(got, tuple):
        raise damaged_line_error(path, line_number(path, got[1]))
    return got


def _offset_of(path: Path, start: int, raw: bytes) -> int:
    """The byte offset of the line `raw`, the first such line at or after `start`."""
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            fh.readline()
        while True:
            offset = fh.tell()
            line = fh.readline()
            if not line or line == raw or line.startswith(raw):
                return offset

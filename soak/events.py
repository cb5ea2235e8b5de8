"""The run's event log: events.jsonl, one JSON object per line.

Written through structlog's WriteLogger; every event is flushed to the OS as soon as it is
emitted, so a SIGKILL of soak leaves a valid file up to the last event (at
worst one partial last line, which the reader drops).  This file is the only
contract between `soak run` and everything that analyses a run.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from pathlib import Path
from typing import Iterator

import structlog

from soak.errors import BadInput

EVENTS_FILE = "events.jsonl"
SCHEMA_VERSION = 1
ENVELOPE = ("event", "seq", "t", "ts", "run_id")


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return repr(obj)


class EventLog:
    """Append-only structured event writer for one run."""

    def __init__(self, path: Path, run_id: str, t0: float | None = None):
        self.path = Path(path)
        self.run_id = run_id
        self.t0 = time.monotonic() if t0 is None else t0
        self._seq = 0
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")
        # structlog's writer (one line, then flush); the envelope and the JSON are made here
        # directly: a bound logger's processor chain cost ~150 us per event, more than the
        # rest of a zero-work iteration (benchmarks/bench_overhead.py)
        self._writer = structlog.WriteLogger(self._file)

    def _stamp(self, event: str, event_dict: dict) -> dict:
        stamped = {
            "event": event,
            "seq": self._seq,
            "t": round(time.monotonic() - self.t0, 6),
            "ts": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "run_id": self.run_id,
        }
        for key, value in event_dict.items():
            # a payload field never overwrites the envelope: it keeps its value under "<key>_"
            stamped[f"{key}_" if key in ENVELOPE else key] = value
        return stamped

    def emit(self, event: str, **fields) -> None:
        with self._lock:
            if self._file.closed:
                return
            line = json.dumps(self._stamp(event, fields), ensure_ascii=False, default=_json_default)
            self._writer.msg(line)  # writes one line and flushes
            self._seq += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def events_path(run: str | Path) -> Path:
    run = Path(run)
    return run / EVENTS_FILE if run.is_dir() else run


def read_events(run: str | Path, kinds: set[str] | None = None) -> Iterator[dict]:
    """Yield the events of a run folder (or an events.jsonl path), in order.

    A truncated last line (soak was killed mid-write) is dropped.  A corrupt
    line elsewhere raises BadInput naming the line.
    """
    path = events_path(run)
    if not path.exists():
        raise BadInput(f"no event log at {path}", "pass a run folder written by `soak run` (logs/<run-id>)")
    with path.open("rb") as f:
        lines = f.read().split(b"\n")
    last = len(lines) - 1
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):  # a kill can cut a UTF-8 character too
            if number - 1 >= last - 1:  # the final, unterminated line
                return
            raise BadInput(f"{path}:{number}: corrupt event line", "the run folder was damaged") from None
        if kinds is None or event.get("event") in kinds:
            yield event

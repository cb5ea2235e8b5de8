"""The run's event log: events.jsonl, one JSON object per line.

Written through structlog's WriteLogger; every event is flushed to the OS as soon as it is
emitted, so a SIGKILL of soak leaves a valid file up to the last event (at
worst one partial last line, which the reader drops).  The run folder's
names, schema and reader live in soak.run_folder; this is its writer.
While the log is open the writer holds the folder's lock
(soak.run_folder.WriterLock), so readers can tell a running run from one
that was killed.  `run_start` carries the folder's schema version.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from pathlib import Path
import structlog

from soak import run_folder

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

    def __init__(self, path: Path, run_id: str, t0: float | None = None, listener=None):
        self.path = Path(path)
        self.listener = listener  # called (event, fields) after each event is written
        self.run_id = run_id
        self.t0 = time.monotonic() if t0 is None else t0
        self._seq = 0
        self._lock = threading.Lock()
        self._writer_lock = run_folder.WriterLock(self.path.parent)
        self._file = self.path.open("a", encoding="utf-8")
        # structlog's writer (one line, then flush); the envelope and the JSON are made here
        # directly: a bound logger's processor chain cost ~150 us per event, more than the
        # rest of a zero-work iteration (benchmarks/bench_overhead.py)
        self._writer = structlog.WriteLogger(self._file)

    def _stamp(self, event: str, event_dict: dict) -> dict:
        if event == "run_start":
            event_dict.setdefault("schema", run_folder.SCHEMA)
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
            stamped = self._stamp(event, fields)
            line = json.dumps(stamped, ensure_ascii=False, default=_json_default)
            # the number is taken before the write: a write that fails for lack of space keeps
            # the line buffered, and it goes out whole with the next one (seq stays unique)
            self._seq += 1
            try:
                self._writer.msg(line)  # writes one line and flushes
            except UnicodeEncodeError:
                # text that is not valid Unicode (a lone surrogate from a decoder or a
                # hand-made prompt): nothing was written (the text wrapper encodes the
                # line first); write it with every non-ASCII character escaped, valid
                # UTF-8 that reads back as the same text
                self._writer.msg(json.dumps(stamped, ensure_ascii=True, default=_json_default))
        if self.listener is not None:
            self.listener(event, fields)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()
            self._writer_lock.release()

"""The run's event log: events.jsonl, one JSON object per line.

Every event is one write() of one whole line, flushed to the OS as soon as it is
emitted, so a SIGKILL of soak leaves a valid file up to the last event (at
worst one partial last line, which the reader drops).  The line is made
directly (the envelope formatted, the fields by one reused encoder): it is the
biggest cost of a fast iteration (benchmarks/bench_overhead.py).  The run folder's
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

from soak import run_folder

ENVELOPE = ("event", "seq", "t", "ts", "run_id")
_ENVELOPE_KEYS = frozenset(ENVELOPE)


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
        # binary and buffered: a line that a full disk refuses stays in the buffer, whole, and goes
        # out with the next flush (each emit flushes)
        self._file = self.path.open("ab")
        self._encode = json.JSONEncoder(ensure_ascii=False, default=_json_default).encode
        self._run_id_json = json.dumps(run_id, ensure_ascii=False)
        self._names: dict[str, str] = {}  # event name -> its JSON
        self._ts_second: int | None = None
        self._ts_prefix = ""

    def _ts(self) -> str:
        """ISO-8601 UTC to the millisecond, as datetime.isoformat(timespec="milliseconds") writes it
        (the date and time of day formatted once a second)."""
        second, ns = divmod(time.time_ns(), 1_000_000_000)
        if second != self._ts_second:
            self._ts_second = second
            self._ts_prefix = _dt.datetime.fromtimestamp(second, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._ts_prefix}.{ns // 1_000_000:03d}+00:00"

    def _stamp(self, event: str, event_dict: dict, t: float, ts: str) -> dict:
        """The event as one dict (the slow path: envelope clashes, text that is not valid Unicode)."""
        stamped = {"event": event, "seq": self._seq, "t": t, "ts": ts, "run_id": self.run_id}
        for key, value in event_dict.items():
            # a payload field never overwrites the envelope: it keeps its value under "<key>_"
            stamped[f"{key}_" if key in ENVELOPE else key] = value
        return stamped

    def emit(self, event: str, **fields) -> None:
        with self._lock:
            if self._file.closed:
                return
            if event == "run_start":
                fields.setdefault("schema", run_folder.SCHEMA)
            t = round(time.monotonic() - self.t0, 6)
            ts = self._ts()
            if _ENVELOPE_KEYS.isdisjoint(fields):
                name = self._names.get(event)
                if name is None:
                    name = self._names[event] = json.dumps(event, ensure_ascii=False)
                # the same text json.dumps(stamped) gives: the envelope first, then the fields in order
                line = (f'{{"event": {name}, "seq": {self._seq}, "t": {t!r}, "ts": "{ts}", '
                        f'"run_id": {self._run_id_json}' + (", " + self._encode(fields)[1:] if fields else "}"))
            else:
                line = self._encode(self._stamp(event, fields, t, ts))
            try:
                data = (line + "\n").encode("utf-8")
            except UnicodeEncodeError:
                # text that is not valid Unicode (a lone surrogate from a decoder or a hand-made
                # prompt): write the line with every non-ASCII character escaped, valid UTF-8
                # that reads back as the same text
                data = (json.dumps(self._stamp(event, fields, t, ts), ensure_ascii=True, default=_json_default)
                        + "\n").encode("ascii")
            # the number is taken before the write: a write that fails for lack of space keeps
            # the line buffered, and it goes out whole with the next one (seq stays unique)
            self._seq += 1
            self._file.write(data)
            self._file.flush()
        if self.listener is not None:
            self.listener(event, fields)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()
            self._writer_lock.release()

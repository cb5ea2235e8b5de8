"""The one reader of events.jsonl (`EventReader`, `read_events`), streaming,
with one rule for damaged lines.

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

A field whose value has another type than the event-type registry
(soak.run_folder.event_types) says is dropped as the event is read
(`sanitize`), so every consumer sees it as absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from soak.errors import BadInput
from soak.run_folder.event_types import ENVELOPE_TYPES, EVENT_TYPES, PASSING_TYPES
from soak.run_folder.names import events_path


def sanitize(ev: dict) -> int:
    """Drop, in place, the fields of `ev` whose value has the wrong type
    (EVENT_TYPES; null is always allowed); returns how many were dropped."""
    bad = [k for k, ok in ENVELOPE_TYPES.items() if k in ev and not ok(ev[k])]
    for k in bad:
        del ev[k]
    kind = ev.get("event")
    types = EVENT_TYPES.get(kind)
    if not types:
        return len(bad)
    passing = PASSING_TYPES[kind]
    wrong = [k for k, v in ev.items()
             if v is not None and k in types and v.__class__ not in passing[k] and not types[k](v)]
    for k in wrong:
        del ev[k]
    return len(bad) + len(wrong)


# --- reading events ------------------------------------------------------------------
_PREFIX = b'{"event": "'


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

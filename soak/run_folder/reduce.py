"""One pass over events.jsonl feeding several readers at once, split over
forked processes for a long log (`reduce_lines`), and one part of that work
in this process (`feed_range`)."""

from __future__ import annotations

import os
from pathlib import Path

from soak.errors import BadInput
from soak.run_folder.names import events_path
from soak.run_folder.reader import _PREFIX, bad_shape, damaged_line_error, decode_line, line_number


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

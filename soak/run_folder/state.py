"""Whether a run is still being written: the lock its writer holds
(`WriterLock`, RUN/run.lock) and the run_end it writes last (`state`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from soak.errors import BadInput
from soak.run_folder.manifest import require
from soak.run_folder.names import LOCK, events_path
from soak.run_folder.reader import EventReader

RUNNING, COMPLETE, ENDED_WITHOUT_RUN_END = "running", "complete", "ended_without_run_end"
_KIND_RE = re.compile(rb'"event"\s*:\s*"([^"\\]*)"')


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

"""Room to end a run on a full disk.

A run writes events until the disk fills.  To still write the `error` and
`run_end` events, the manifest and summary.json, the run folder holds a
spare file from the start; when a write fails for lack of space, the runner
deletes it and ends the run in the room it leaves.  A run that ends normally
deletes it too (a run killed with SIGKILL leaves it: RESERVE_FILE).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from soak import errors
from soak.run_folder import RESERVE as RESERVE_FILE

RESERVE_BYTES = 256 << 10  # run_end, error, manifest and summary need a few KB; the rest is margin
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def disk_full_error(run_dir: Path, exc: OSError, what: str) -> errors.DiskFull:
    where = f" ({exc.filename})" if exc.filename else ""
    return errors.DiskFull(f"the disk holding {run_dir} is full: {what}{where}: {exc.strerror}",
                           "free space there or pass --out on a disk with room; the run folder holds "
                           "everything recorded up to this point")


class DiskReserve:
    def __init__(self, run_dir: Path, size: int = RESERVE_BYTES):
        self.path = Path(run_dir) / RESERVE_FILE
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, size)  # real blocks, not a sparse file
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.write(fd, b"\0" * size)
        except OSError:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        os.close(fd)

    def release(self) -> None:
        """Give the room back (idempotent)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

"""Atomic writes of the run folder's files: temporary file in the same
folder, fsync, rename, fsync of the folder; a failure is a clear error
(BadInput naming the file), never half a file."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

from soak.errors import BadInput


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

"""Extract a .tar.gz someone else made, refusing anything unsafe.

A bundle comes from another machine and may have been crafted.  Refused
(the whole archive, before anything is written):
  * absolute names, drive letters, `..` components, backslashes, NULs;
  * symbolic and hard links (a bundle has none), devices, FIFOs;
  * members over `max_member` bytes, more than `max_members` members, or a
    total over `max_total` bytes (a decompression bomb), or a compressed
    stream that expands past `max_total`;
  * a name that occurs twice (a later member could overwrite an earlier one).
Members are then written with the tarfile "data" filter as a second line
of defence, with modes reduced to rw-r--r-- / rwxr-xr-x.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from soak.errors import BadInput

MAX_MEMBER = 512 << 20
MAX_TOTAL = 2 << 30
MAX_MEMBERS = 20000


def _refuse(archive: Path, why: str) -> BadInput:
    return BadInput(f"refusing to extract {archive}: {why}",
                    hint="this is not a bundle written by `soak bundle`, or it was tampered with; "
                         "ask the sender for the original .tar.gz")


def check_members(archive: Path, members: list[tarfile.TarInfo], max_member: int, max_total: int,
                  max_members: int) -> None:
    if len(members) > max_members:
        raise _refuse(archive, f"{len(members)} members (limit {max_members})")
    total = 0
    seen: set[str] = set()
    for m in members:
        name = m.name
        if not name or "\x00" in name or "\\" in name:
            raise _refuse(archive, f"member name {name!r} is not a plain relative path")
        p = PurePosixPath(name)
        if p.is_absolute() or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise _refuse(archive, f"member {name!r} has an absolute path")
        if ".." in p.parts:
            raise _refuse(archive, f"member {name!r} points outside the folder (..)")
        if m.issym() or m.islnk():
            raise _refuse(archive, f"member {name!r} is a link (to {m.linkname!r})")
        if not (m.isfile() or m.isdir()):
            raise _refuse(archive, f"member {name!r} is a device, FIFO or other special file")
        if m.size > max_member:
            raise _refuse(archive, f"member {name!r} is {m.size} bytes (limit {max_member})")
        total += m.size
        if total > max_total:
            raise _refuse(archive, f"members add up to more than {max_total} bytes")
        key = str(p)
        if key in seen and not m.isdir():
            raise _refuse(archive, f"member {name!r} occurs twice")
        seen.add(key)


def safe_extract(archive: str | Path, dest: str | Path, max_member: int = MAX_MEMBER,
                 max_total: int = MAX_TOTAL, max_members: int = MAX_MEMBERS) -> list[str]:
    """Extract `archive` (tar, tar.gz) into `dest`; returns the member names."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise BadInput(f"bundle {archive} does not exist", hint="pass the .tar.gz written by `soak bundle`")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members, total = [], 0
            for m in tar:  # streams through the archive: a bomb stops at the limits
                members.append(m)
                total += m.size
                if len(members) > max_members or total > max_total or m.size > max_member:
                    break
            check_members(archive, members, max_member, max_total, max_members)
            dest.mkdir(parents=True, exist_ok=True)
            for m in members:
                m.mode = 0o755 if m.isdir() else 0o644
                m.uid = m.gid = 0
                m.uname = m.gname = ""
                tar.extract(m, dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise _refuse(archive, str(exc)) from None
        raise BadInput(f"cannot read bundle {archive}: {exc}",
                       hint="the file is damaged or not a .tar.gz; ask the sender for the original") from None
    return [m.name for m in members]

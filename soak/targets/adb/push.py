"""Put the runner, libraries and model on the device, keyed by content.

Layout under the work root (default /data/local/tmp/soak):

    blobs/<sha>/<name>          each file once, pushed only if absent
    <bundle-hash>/bin/soak-runner -> ../../blobs/<sha>/soak-runner
    <bundle-hash>/lib/<name>       (engine, plugins, interposer)
    <bundle-hash>/model/<name>     (config.json and the files beside it)
    <bundle-hash>/.soak-complete   written last; its presence means "ready"

Unchanged files are never pushed again, even when another file of the
bundle changes.  A blob is pushed to a temporary name and renamed, so an
interrupted push leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from soak.targets.adb._conn import AdbLink, quote

BIG_FILE = 8 << 20  # show progress for files above 8 MiB
MODEL_SUFFIXES = (".mnn", ".weight", ".txt", ".bin", ".json", ".model", ".mtok")


@dataclass(frozen=True)
class Entry:
    local: Path
    role: str  # bin | lib | model
    name: str
    sha: str
    size: int

    @property
    def blob(self) -> str:
        return f"blobs/{self.sha}/{self.name}"


def _hash_cache_path() -> Path:
    from soak.native_build import cache_root

    return cache_root() / "adb-file-hashes.json"


def file_sha(path: Path) -> str:
    """sha256 (first 20 hex digits) of a file, cached by path, size and mtime."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = _hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()[:20]
    if st.st_size >= BIG_FILE:  # only worth remembering for big files
        cache[key] = digest
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))
            tmp.replace(cache_file)
        except OSError:
            pass
    return digest


def entry(local: str | os.PathLike, role: str, name: str | None = None) -> Entry:
    path = Path(local)
    return Entry(path, role, name or path.name, file_sha(path), path.stat().st_size)


def model_files(config_path: Path) -> list[Path]:
    """config.json plus, for a model folder (MNN: llm.mnn, *.weight, tokenizer), its other files."""
    folder = config_path.parent
    siblings = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    is_model_dir = any(p.suffix in (".mnn", ".weight") or p.name.endswith(".mnn.weight") for p in siblings)
    if not is_model_dir:
        return [config_path]
    return sorted(p for p in siblings if p.suffix in MODEL_SUFFIXES or ".mnn" in p.name)


def bundle_hash(entries: list[Entry]) -> str:
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: (e.role, e.name)):
        h.update(f"{e.role}/{e.name}={e.sha}\n".encode())
    return h.hexdigest()[:16]


class Progress:
    """One line per big file on stderr: name, percent, MB/s."""

    def __init__(self, serial: str, name: str, size: int, out=sys.stderr):
        self.serial, self.name, self.size, self.out = serial, name, size, out
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and done < self.size:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-6) / 1e6
        end = "\n" if done >= self.size else "\r"
        self.out.write(f"  {self.serial}: pushing {self.name} {100 * done // max(self.size, 1):3d}% "
                       f"({done >> 20}/{self.size >> 20} MiB, {rate:.1f} MB/s){end}")
        self.out.flush()


def sync_bundle(link: AdbLink, entries: list[Entry], root: str, quiet: bool = False) -> tuple[str, dict]:
    """Make the bundle present on the device.  Returns (remote dir, stats)."""
    bhash = bundle_hash(entries)
    remote = f"{root}/{bhash}"
    stats = {"bundle": bhash, "pushed_files": 0, "pushed_bytes": 0, "skipped_files": 0}
    done = link.shell(f"cat {quote(remote)}/.soak-complete 2>/dev/null")
    if done.rc == 0 and done.text.strip() == bhash:
        stats["skipped_files"] = len(entries)
        return remote, stats

    unique = {e.blob: e for e in entries}
    checks = " ".join(quote(b) for b in unique)
    present = link.shell(f"mkdir -p {quote(root)}/blobs && cd {quote(root)} && "
                         f"for f in {checks}; do [ -f \"$f\" ] && echo \"$f\"; done; true")
    have = set(present.text.split())
    for blob, e in unique.items():
        if blob in have:
            stats["skipped_files"] += 1
            continue
        target = f"{root}/{blob}"
        part = f"{root}/blobs/{e.sha}/.{e.name}.part"
        link.shell(f"mkdir -p {quote(root)}/blobs/{e.sha}")
        progress = None if quiet or e.size < BIG_FILE else Progress(link.serial, e.name, e.size)
        mode = 0o755 if e.role == "bin" else 0o644
        link.push(e.local, part, mode=mode, progress=progress)
        moved = link.shell(f"chmod {mode:o} {quote(part)} && mv -f {quote(part)} {quote(target)}")
        if moved.rc != 0:
            from soak.errors import DeviceUnavailable

            raise DeviceUnavailable(f"{link.serial}: could not store {target}: {moved.stderr.decode(errors='replace')}",
                                    "check free space on the device (df /data) and the work folder")
        stats["pushed_files"] += 1
        stats["pushed_bytes"] += e.size

    links = " && ".join(f"ln -sf ../../{quote(e.blob)} {quote(remote)}/{e.role}/{quote(e.name)}" for e in entries)
    made = link.shell(f"mkdir -p {quote(remote)}/bin {quote(remote)}/lib {quote(remote)}/model {quote(remote)}/run"
                      f" && {links} && echo {bhash} > {quote(remote)}/.soak-complete")
    if made.rc != 0:
        from soak.errors import DeviceUnavailable

        raise DeviceUnavailable(f"{link.serial}: could not lay out {remote}: {made.stderr.decode(errors='replace')}",
                                "check that the work folder is writable (SOAK_ADB_ROOT / ,root=)")
    return remote, stats

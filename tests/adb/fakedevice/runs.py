"""Reading a soak run while it goes (for the adb tests)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def events(run_dir: Path, kinds: set[str] | None = None) -> list[dict]:
    from soak.run_folder import read_events

    return [e for e in read_events(run_dir) if kinds is None or e["event"] in kinds]


def wait_for_iterations(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "events.jsonl").exists() and len(events(run_dir, {"iteration"})) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"soak ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {n} iterations in {timeout}s")

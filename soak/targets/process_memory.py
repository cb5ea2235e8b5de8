"""Memory and resource samples of the worker process (psutil)."""

from __future__ import annotations

import psutil


def sample_process(pid: int) -> dict | None:
    """RSS, USS, PSS (bytes), open fds and threads of pid; None if it's gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            sample = {"rss": proc.memory_info().rss, "uss": None, "pss": None,
                      "fds": proc.num_fds(), "threads": proc.num_threads()}
            try:
                full = proc.memory_full_info()
                sample["uss"] = getattr(full, "uss", None)
                sample["pss"] = getattr(full, "pss", None)
            except (psutil.AccessDenied, OSError):
                pass
        return sample
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None

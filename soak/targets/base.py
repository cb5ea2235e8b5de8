"""The Target interface: start a worker that speaks the worker protocol,
sample its memory, describe the machine, report device health."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Protocol

from soak.worker.protocol import WorkerProcess  # what spawn_worker returns


class TargetSink(Protocol):
    """What a target may tell the run it serves (the runner gives one with attach())."""

    def emit_fault(self, fault: dict) -> None:
        """A fault of the target itself (device_offline, device_reboot): recorded and counted."""

    def emit_event(self, event: str, **fields) -> None:
        """Any other event about the target (device_push)."""


class Target(abc.ABC):
    name: str = "target"
    sink: TargetSink | None = None
    remote_pids: bool = False  # True: the worker's pid is the one its hello reports (a device pid)

    def attach(self, sink: TargetSink | None) -> None:
        """The run that uses this target from now on (None: no run, keep faults for check_health)."""
        self.sink = sink

    def prepare(self, spec: dict, run_dir: Path) -> dict:
        """Make the engine spec usable on the target (push files, rewrite paths)."""
        return spec

    @abc.abstractmethod
    def spawn_worker(self, env: dict[str, str], cwd: Path) -> WorkerProcess:
        """Start a worker.  env holds only the variables soak adds."""

    def local_file(self, path: str) -> str | None:
        """The file on this machine that is the worker's module `path` (a crash's backtrace is
        symbolized from it); None when there is none.  Here: the same path."""
        return path

    def worker_hint(self) -> str:
        """The fix to show when this target's worker does not start."""
        return "check that soak is installed completely (pip install -e . in the checkout)"

    @abc.abstractmethod
    def sample_memory(self, pid: int) -> dict | None:
        """rss/uss/pss/fds/threads (bytes, counts) of the worker; None if gone.
        May add gpu_bytes where the platform exposes it."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Host or device facts for the manifest."""

    def check_health(self) -> list[dict]:
        """Events about the target itself (device offline, rebooted); [] if fine."""
        return []

    def close(self) -> None:
        pass

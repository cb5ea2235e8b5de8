"""Run the worker as a subprocess of this host."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from soak.targets.process_memory import sample_process
from soak.targets.base import Target


class LocalProcess:
    def __init__(self, popen: subprocess.Popen):
        self._p = popen
        self.stdin, self.stdout, self.stderr = popen.stdin, popen.stdout, popen.stderr

    @property
    def pid(self) -> int:
        return self._p.pid

    def poll(self):
        return self._p.poll()

    def wait(self, timeout=None):
        try:
            return self._p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        try:
            os.killpg(self._p.pid, 9)
        except (ProcessLookupError, PermissionError):
            try:
                self._p.kill()
            except ProcessLookupError:
                pass


class LocalTarget(Target):
    name = "local"

    def spawn_worker(self, env: dict[str, str], cwd: Path) -> LocalProcess:
        full_env = dict(os.environ)
        for key, value in env.items():
            if key == "LD_LIBRARY_PATH" and full_env.get(key):
                value = value + os.pathsep + full_env[key]
            full_env[key] = value
        full_env["PYTHONUNBUFFERED"] = "1"
        # its own session: Ctrl-C reaches soak only, which then stops gracefully
        popen = subprocess.Popen([sys.executable, "-m", "soak.worker"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                 cwd=str(cwd), start_new_session=True, bufsize=0)
        return LocalProcess(popen)

    def sample_memory(self, pid: int) -> dict | None:
        return sample_process(pid)

    def describe(self) -> dict:
        mem = psutil.virtual_memory()
        return {
            "kind": "local",
            "hostname": socket.gethostname(),
            "os": "linux" if sys.platform.startswith("linux") else sys.platform,
            "kernel": platform.release(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "memory_bytes": mem.total,
        }

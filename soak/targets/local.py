"""Run the worker as a subprocess of this host."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from soak import errors
from soak.diagnostics import get_logger
from soak.targets.process_memory import sample_process
from soak.targets.base import Target
from soak.worker.protocol import package_dir

# The worker imports soak from the folder given, never from whatever `soak` the
# interpreter's own sys.path would find (a stale install, a checkout elsewhere).
WORKER_BOOT = ("import sys; sys.path[:] = [sys.argv[1]] + [p for p in sys.path if p not in ('', '.')]; "
               "from soak.worker.main import main; raise SystemExit(main())")


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

    def __init__(self, python: str | None = None, package_root: str | Path | None = None):
        """python: the worker's interpreter (default: this one); package_root: the folder
        holding the `soak` package the worker runs (default: the one running now)."""
        self.python = python or sys.executable
        self.package_root = Path(package_root) if package_root else Path(package_dir()).parent
        self._crash: str | None = None

    def worker_argv(self) -> list[str]:
        return [self.python, "-c", WORKER_BOOT, str(self.package_root)]

    def worker_hint(self) -> str:
        return (f"run `{self.python} -c 'import soak.worker.main'` in {self.package_root} to see why "
                f"(a missing dependency: pip install -e {self.package_root})")

    def _crash_lib(self) -> str:
        """The worker's fatal-signal handler (native/crash), built here once, not in each worker
        (its first build would eat into the worker's hello time); "" when it cannot be built."""
        if self._crash is None:
            from soak.native_build import ensure_built

            try:
                self._crash = str(ensure_built("soak_crash"))
            except errors.BuildFailed as exc:
                self._crash = ""
                get_logger(__name__).warning("no native backtraces on a crash", why=exc.message)
        return self._crash

    def spawn_worker(self, env: dict[str, str], cwd: Path) -> LocalProcess:
        full_env = dict(os.environ)
        for key, value in env.items():
            if key == "LD_LIBRARY_PATH" and full_env.get(key):
                value = value + os.pathsep + full_env[key]
            full_env[key] = value
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["SOAK_CRASH_LIB"] = self._crash_lib()
        # its own session: Ctrl-C reaches soak only, which then stops gracefully
        try:
            popen = subprocess.Popen(self.worker_argv(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                     cwd=str(cwd), start_new_session=True, bufsize=0)
        except OSError as exc:
            raise errors.HarnessError(f"soak's worker did not start: {self.python}: {exc.strerror or exc}",
                                      "the worker runs with the interpreter that runs soak: reinstall it, "
                                      "or run soak with a Python that exists") from None
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

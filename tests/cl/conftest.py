"""Fixtures for the interposer tests: build it (and cl_workload) once, run the
workload through it on PoCL, parse what the workload and the interposer saw."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from soak.cl import interposer
from soak.cl.trace import TraceReader


def _build_dir(lib: Path) -> Path:
    """The CMake build folder holding the interposer (standalone or under native/)."""
    for d in [lib.parent, *lib.parents]:
        if (d / "CMakeCache.txt").exists():
            return d
    raise AssertionError(f"no CMake build folder above {lib}")


@dataclass
class Build:
    lib: Path  # .../interposer/libOpenCL.so
    workload: Path

    @property
    def lib_dir(self) -> Path:
        return self.lib.parent


@pytest.fixture(scope="session")
def cl_build() -> Build:
    from soak import native_build

    lib = interposer.interposer_library()  # soak.native_build: CMake on native/interposer, cached
    # the test program, in the same cached build folder (reconfigured there if another checkout made it)
    workload = native_build.cmake_build(native_build.NATIVE_DIR / "interposer", _build_dir(lib),
                                        "testprog/cl_workload", [], "cl_workload", "the CL test workload")
    assert workload.exists()
    return Build(lib=lib, workload=workload)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    run_dir: Path
    lines: list[list[str]] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # as written (poll_raw)
    stats: dict | None = None
    folded: list[dict] = field(default_factory=list)  # errors folded per kind, exact counts (poll)

    def result(self, *prefix: str) -> list[list[str]]:
        """'result' lines whose first words are prefix, as word lists without the prefix."""
        n = len(prefix)
        return [w[n:] for w in self.lines if w[:n] == list(prefix)]

    def of(self, type_: str, **match) -> list[dict]:
        return [r for r in self.records if r.get("type") == type_ and all(r.get(k) == v for k, v in match.items())]

    def errors(self, **match) -> list[dict]:
        """Folded error records (one per kind, with count/first_seq/last_seq/samples)."""
        return [r for r in self.folded if r.get("type") == "error" and all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def run_workload(cl_build: Build, tmp_path):
    counter = iter(range(1000))

    def run(*args: str, options: dict | None = None, env: dict | None = None, intercept: bool = True,
            timeout: float = 120) -> Run:
        run_dir = tmp_path / f"run{next(counter)}"
        run_dir.mkdir()
        full = dict(os.environ)
        if intercept:
            full.update(interposer.prepare(options or {}, run_dir, interposer_dir=cl_build.lib_dir, mnn_paths=()))
        else:
            full["CL_WORKLOAD_LIB"] = interposer.find_real_library()
        full.update(env or {})
        proc = subprocess.run([str(cl_build.workload), *args], env=full, capture_output=True, text=True,
                              timeout=timeout)
        lines = [ln.split()[1:] for ln in proc.stdout.splitlines() if ln.startswith("result ")]
        raw = TraceReader(run_dir).poll_raw()
        reader = TraceReader(run_dir)
        folded = reader.poll()
        return Run(proc.returncode, proc.stdout, proc.stderr, run_dir, lines, raw, reader.stats(), folded)

    return run


TESTPROG = Path(__file__).resolve().parents[2] / "native" / "interposer" / "testprog"


@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> tuple[Path, Path]:
    """(the do-nothing stub driver, the launch loop), compiled with the system's OpenCL headers."""
    out = tmp_path_factory.mktemp("stub")
    cc = shutil.which("cc") or "cc"
    for args in (["-shared", "-fPIC", str(TESTPROG / "stub_cl.c"), "-o", str(out / "libstub_cl.so")],
                 [str(TESTPROG / "launch_loop.c"), "-I", str(TESTPROG.parent), "-o", str(out / "launch_loop"), "-ldl"]):
        proc = subprocess.run([cc, "-O2", "-Wall", "-Werror", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    return out / "libstub_cl.so", out / "launch_loop"

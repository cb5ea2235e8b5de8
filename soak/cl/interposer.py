"""Set up the OpenCL interposer for a worker process.

    env = prepare(options, run_dir)     # merge into the worker's environment

The interposer is a libOpenCL.so (SONAME libOpenCL.so) in a folder of its own;
the worker gets that folder first on LD_LIBRARY_PATH, so MNN's
dlopen("libOpenCL.so") finds it.  It forwards to the real library named by
SOAK_CL_REAL_LIB.  MNN on Linux tries five absolute paths *before* the bare
name; if one exists MNN never sees the interposer, so prepare() refuses.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from soak.cl.fault_rules import parse_spec
from soak.cl.trace import STATS_PATTERN, TRACE_FILE
from soak.errors import OpenCLSetupError

# MNN core/runtime/OpenCLWrapper.cpp, Linux: tried in this order before the bare name
MNN_LINUX_OPENCL_PATHS: tuple[str, ...] = (
    "/usr/lib/libOpenCL.so",
    "/usr/local/lib/libOpenCL.so",
    "/usr/local/lib/libpocl.so",
    "/usr/lib64/libOpenCL.so",
    "/usr/lib32/libOpenCL.so",
)
LIBRARY_NAME = "libOpenCL.so"
# --cl-profile times 1 kernel launch in this many (an event per launch halves launch-bound GPU decode)
DEFAULT_PROFILE_SAMPLE = 16
# ... at first; then the profiler keeps its own host time within this percentage of each phase's
# wall time, adapting the rate per kernel name and phase (0: the rate stays fixed)
DEFAULT_PROFILE_BUDGET = 5.0
# where --cl-profile's timed commands run (SOAK_CL_PROFILE_QUEUE; native/interposer/twin.c)
PROFILE_QUEUES = ("engine", "twin")
DEFAULT_PROFILE_QUEUE = "engine"


def mnn_bypass_paths(paths: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Those of MNN's absolute OpenCL paths that exist (each one would bypass the interposer)."""
    return [p for p in (MNN_LINUX_OPENCL_PATHS if paths is None else paths) if os.path.lexists(p)]


def check_mnn_paths(paths: tuple[str, ...] | list[str] | None = None) -> None:
    found = mnn_bypass_paths(paths)
    if not found:
        return
    first = found[0]
    raise OpenCLSetupError(
        f"MNN would bypass the OpenCL interposer: {first} exists, and MNN dlopens "
        f"{', '.join(MNN_LINUX_OPENCL_PATHS)} before the bare name libOpenCL.so",
        f"move it out of the way for the run (e.g. sudo mv {first} {first}.off; the loader keeps working "
        f"through libOpenCL.so.1), or run with --no-intercept (no CL call records, no GPU bytes, no faults)"
        + (f"; also present: {', '.join(found[1:])}" if len(found) > 1 else ""))


HEADERS_ENV = "SOAK_CL_INCLUDE_DIR"


def interposer_library(include_dir: str | os.PathLike | None = None) -> Path:
    """Build (once, cached) and return native/interposer's libOpenCL.so.

    include_dir (default: $SOAK_CL_INCLUDE_DIR, else the system's): the folder holding the
    CL/cl.h the wrappers are generated from."""
    include_dir = include_dir or os.environ.get(HEADERS_ENV) or None
    args: tuple[str, ...] = ()
    if include_dir:
        inc = Path(include_dir).resolve()
        if not (inc / "CL" / "cl.h").is_file():
            raise OpenCLSetupError(f"{HEADERS_ENV}={include_dir}: no CL/cl.h there",
                                   "point it at the folder that holds CL/cl.h (e.g. an OpenCL-Headers checkout), "
                                   "or unset it to use the system headers")
        args = (f"-DSOAK_CL_INCLUDE_DIR={inc}",)
    from soak.native_build import ensure_built

    return ensure_built("soak_interposer", args)


def api_names(interposer_dir: Path) -> set[str] | None:
    """Entry points the interposer was generated with (generated/cl_api.txt), if known."""
    listing = Path(interposer_dir) / "generated" / "cl_api.txt"
    try:
        return {line.split("\t", 1)[0] for line in listing.read_text().splitlines() if line.strip()}
    except OSError:
        return None


def find_real_library(explicit: str | None = None) -> str:
    """Absolute path of the real OpenCL library (the ICD loader), or OpenCLSetupError."""
    if explicit:
        path = Path(explicit)
        if not path.exists():
            raise OpenCLSetupError(f"--cl-real-lib {explicit}: no such file",
                                   "pass the path of the real OpenCL library, e.g. "
                                   "/usr/lib/x86_64-linux-gnu/libOpenCL.so.1")
        return str(path.resolve())
    for cand in _ldconfig_paths("libOpenCL.so.1") + _common_paths("libOpenCL.so.1"):
        if os.path.exists(cand):
            return cand
    raise OpenCLSetupError("no OpenCL loader (libOpenCL.so.1) found on this machine",
                           "install one (Debian/Ubuntu: apt-get install ocl-icd-libopencl1 pocl-opencl-icd) "
                           "or pass --cl-real-lib PATH")


def _ldconfig_paths(name: str) -> list[str]:
    ldconfig = shutil.which("ldconfig") or ("/sbin/ldconfig" if os.path.exists("/sbin/ldconfig") else None)
    if not ldconfig:
        return []
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    machine = os.uname().machine
    want64 = machine in ("x86_64", "aarch64", "ppc64le", "s390x", "riscv64")
    paths = []
    for line in out.splitlines():
        m = re.match(rf"\s*{re.escape(name)}\s+\(([^)]*)\)\s+=>\s+(\S+)", line)
        if m and (("64" in m.group(1)) == want64 or "x86-64" in m.group(1)):
            paths.append(m.group(2))
    return paths


def _common_paths(name: str) -> list[str]:
    machine = os.uname().machine
    return [f"/usr/lib/{machine}-linux-gnu/{name}", f"/lib/{machine}-linux-gnu/{name}", f"/usr/lib64/{name}",
            f"/usr/lib/{name}", f"/usr/local/lib/{name}"]


def _opt(options, key: str, default=None):
    if options is None:
        return default
    if isinstance(options, dict):
        return options.get(key, default)
    return getattr(options, key, default)


def prepare(options, run_dir: str | os.PathLike, *, interposer_dir: str | os.PathLike | None = None,
            base_env: dict[str, str] | None = None, mnn_paths: tuple[str, ...] | list[str] | None = None,
            ) -> dict[str, str]:
    """Environment variables that make a worker load OpenCL through the interposer.

    options: the dict from soak.cl.options.options_from_args (faults, gpu_override,
    mem_limit, real_lib) or an object with those attributes.  interposer_dir: the
    folder holding the built libOpenCL.so (default: build it).  base_env: the
    environment to extend (default os.environ) for LD_LIBRARY_PATH."""
    check_mnn_paths(mnn_paths)
    lib_dir = Path(interposer_dir) if interposer_dir else interposer_library().parent
    if not (lib_dir / LIBRARY_NAME).exists():
        raise OpenCLSetupError(f"no {LIBRARY_NAME} in {lib_dir}", "build native/interposer (see its CMakeLists.txt)")
    real = find_real_library(_opt(options, "real_lib"))
    if Path(real).resolve() == (lib_dir / LIBRARY_NAME).resolve():
        raise OpenCLSetupError(f"the real OpenCL library {real} is the interposer itself",
                               "pass the system loader with --cl-real-lib, e.g. .../libOpenCL.so.1")
    faults = _opt(options, "faults") or ""
    if isinstance(faults, (list, tuple)):
        faults = ";".join(faults)
    if faults:
        parse_spec(faults, api_names(lib_dir))  # BadInput with the fix, before anything starts
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env_in = os.environ if base_env is None else base_env
    old = env_in.get("LD_LIBRARY_PATH", "")
    budget = _opt(options, "profile_budget")
    budget = DEFAULT_PROFILE_BUDGET if budget is None else budget
    env = {
        "LD_LIBRARY_PATH": str(lib_dir) + (os.pathsep + old if old else ""),
        "SOAK_CL_REAL_LIB": real,
        "SOAK_CL_TRACE": str((run_dir / TRACE_FILE).resolve()),
        "SOAK_CL_STATS": str(run_dir.resolve() / STATS_PATTERN),
        "SOAK_CL_GPU_OVERRIDE": "1" if _opt(options, "gpu_override") else "0",
        "SOAK_CL_FAULTS": faults,
        "SOAK_CL_MEM_LIMIT": str(int(_opt(options, "mem_limit") or 0) or ""),
        "SOAK_CL_PROFILE": "1" if _opt(options, "profile") else "0",
        "SOAK_CL_PROFILE_SAMPLE": str(int(_opt(options, "profile_sample") or DEFAULT_PROFILE_SAMPLE)),
        "SOAK_CL_PROFILE_BUDGET": f"{float(budget):g}",
        "SOAK_CL_PROFILE_QUEUE": _opt(options, "profile_queue") or DEFAULT_PROFILE_QUEUE,
    }
    return env

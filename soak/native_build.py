"""Build native/ with CMake on first use, cached by a hash of its sources.

The build folder is `$SOAK_CACHE_DIR/native/<hash>` (default
`~/.cache/soak/native/<hash>`).  Same sources, same folder: a rebuild happens
only when a file under native/ changes.  A file lock makes concurrent first
uses (parallel tests, several soak runs) build once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from soak.errors import BuildFailed

NATIVE_DIR = Path(__file__).resolve().parent.parent / "native"

# CMake target -> file it produces, relative to the build folder
TARGETS = {
    "soak_test_engine": "test_engine/libsoak_test_engine.so",
    "soak_interposer": "interposer/libOpenCL.so",
    "soak-runner": "runner/soak-runner",
}


def cache_root() -> Path:
    base = os.environ.get("SOAK_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "soak"


def source_hash(extra: str = "") -> str:
    if not NATIVE_DIR.is_dir():
        raise BuildFailed(f"native sources not found at {NATIVE_DIR}",
                          "install soak from a source checkout: pip install -e .")
    h = hashlib.sha256(extra.encode())
    for path in sorted(NATIVE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(NATIVE_DIR)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _need_tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if not found:
        raise BuildFailed(f"cannot build soak's native parts: '{name}' is not on PATH",
                          f"install it, e.g. apt-get install {package}")
    return found


def _run(cmd: list[str], log: Path, what: str) -> None:
    with log.open("ab") as out:
        out.write(("\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        missing = [line for line in tail if "No such file" in line or "not found" in line.lower()]
        hint = "see the log: " + str(log)
        if missing:
            hint = f"{missing[0].strip()} (full log: {log})"
        raise BuildFailed(f"{what} failed (exit {proc.returncode}):\n    " + "\n    ".join(tail[-8:]), hint)


def ensure_built(target: str = "soak_test_engine", cmake_args: tuple[str, ...] = ()) -> Path:
    """Build `target` if needed and return the path of the file it makes.

    target "all" builds everything configured and returns the build folder.
    """
    cmake = _need_tool("cmake", "cmake")
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        _need_tool("cc", "gcc")
    key = source_hash(" ".join(cmake_args))
    build = cache_root() / "native" / key
    build.mkdir(parents=True, exist_ok=True)
    product = build if target == "all" else build / TARGETS.get(target, target)
    if target != "all" and product.exists():
        return product
    log = build / "build.log"
    with (build / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target != "all" and product.exists():
            return product
        if not (build / "CMakeCache.txt").exists():
            _run([cmake, "-S", str(NATIVE_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                  *cmake_args], log, "configuring native/ with CMake")
        cmd = [cmake, "--build", str(build), "-j", "2"]
        if target != "all":
            cmd += ["--target", target]
        _run(cmd, log, f"building {target}")
    if target != "all" and not product.exists():
        raise BuildFailed(f"the build of {target} produced no {product}", f"see {log}")
    return product


def build_test_engine() -> Path:
    return ensure_built("soak_test_engine")

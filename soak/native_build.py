"""Build soak's native components with CMake on first use, cached by source hash.

Each component (native/test_engine, native/interposer, native/runner) is a
standalone CMake project built on its own, so a machine without OpenCL
headers can still build the test engine.  The build folder is
`$SOAK_CACHE_DIR/native/<target>-<hash>` (default `~/.cache/soak/...`),
the hash covering the component's folder and native/include.  Same sources,
same folder: a rebuild happens only when a file changes.  A file lock makes
concurrent first uses (parallel tests, several soak runs) build once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from soak.diagnostics import get_logger
from soak.errors import BuildFailed

diag = get_logger(__name__)


def _native_dir() -> Path:
    """native/ shipped inside the package (a wheel), else the checkout's native/."""
    package = Path(__file__).resolve().parent
    inside = package / "native"
    return inside if inside.is_dir() else package.parent / "native"


NATIVE_DIR = _native_dir()

# CMake target -> (component folder under native/, file it produces in the build folder)
TARGETS = {
    "soak_test_engine": ("test_engine", "libsoak_test_engine.so"),
    "soak_interposer": ("interposer", "libOpenCL.so"),
    "soak-runner": ("runner", "soak-runner"),
    "soak_oracle": ("oracle", "libsoak_oracle.so"),
    "soak_crash": ("crash", "libsoak_crash.so"),
}
# components whose sources another one compiles in (their files count in its hash)
USES = {"soak-runner": ("crash", "oracle")}


def cache_root() -> Path:
    base = os.environ.get("SOAK_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "soak"


def source_hash(folders: list[Path], extra: str = "") -> str:
    if not NATIVE_DIR.is_dir():
        raise BuildFailed(f"native sources not found at {NATIVE_DIR}",
                          "reinstall soak: its wheel ships native/ as package data (pip install --force-reinstall soak)")
    h = hashlib.sha256(extra.encode())
    for folder in folders:
        for path in sorted(folder.rglob("*")):
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


def run_logged(cmd: list[str], log: Path, what: str) -> None:
    """Run a build command, appending to log; BuildFailed with its last lines on failure."""
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
    """Build `target` (a key of TARGETS) if needed and return the file it makes."""
    if target not in TARGETS:
        raise BuildFailed(f"unknown native target {target!r}", f"one of {', '.join(TARGETS)}")
    component, filename = TARGETS[target]
    source = NATIVE_DIR / component
    if not (source / "CMakeLists.txt").exists():
        raise BuildFailed(f"native component {component} is missing from {NATIVE_DIR}",
                          "install soak from a complete source checkout")
    _need_tool("cmake", "cmake")
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        _need_tool("cc", "gcc")
    key = source_hash([source, NATIVE_DIR / "include", *(NATIVE_DIR / c for c in USES.get(target, ()))],
                      " ".join(cmake_args))
    build = cache_root() / "native" / f"{target}-{key}"
    return cmake_build(source, build, filename, [*cmake_args], target, f"native/{component}")


def cmake_build(source: Path, build: Path, filename: str, configure_args: list[str], target: str | None,
                what: str, build_type: str = "RelWithDebInfo", runner=None) -> Path:
    """Configure and build `source` in `build` (once: a file lock serialises concurrent callers)
    and return `build/filename`."""
    cmake = _need_tool("cmake", "cmake")
    run = runner or run_logged
    product = build / filename
    if product.exists():
        return product
    build.mkdir(parents=True, exist_ok=True)
    log = build / "build.log"
    # a diagnostic (stderr; stdout may be --json): a first build takes seconds to minutes
    diag.info(f"building {what} (first use)", cache=str(build))
    with (build / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if product.exists():
            return product
        if _configured_for(build) not in (None, source.resolve()):
            # the same sources, configured from another checkout (maybe gone since): start afresh
            (build / "CMakeCache.txt").unlink()
            shutil.rmtree(build / "CMakeFiles", ignore_errors=True)
        if not (build / "CMakeCache.txt").exists():
            run([cmake, "-S", str(source), "-B", str(build), f"-DCMAKE_BUILD_TYPE={build_type}", *configure_args],
                log, f"configuring {what} with CMake")
        run([cmake, "--build", str(build), "-j", "2", *(["--target", target] if target else [])],
            log, f"building {what}")
    if not product.exists():
        found = list(build.rglob(filename))
        if found:
            return found[0]
        raise BuildFailed(f"the build of {what} produced no {product}", f"see {log}")
    return product


def _configured_for(build: Path) -> Path | None:
    """The source folder a CMake build folder was configured from (None if not configured)."""
    try:
        text = (build / "CMakeCache.txt").read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            return Path(line.split("=", 1)[1]).resolve()
    return Path("/nonexistent")  # a cache without its source folder: not trusted


def build_test_engine() -> Path:
    return ensure_built("soak_test_engine")

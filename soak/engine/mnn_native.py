"""A hand-built MNN (libllm.so + OpenCL plugin) and the soak shim built on it.

The user builds MNN themselves (soak ships no MNN code) and names the build
folder with SOAK_MNN_BUILD (and the source folder with SOAK_MNN_SOURCE when
the build folder doesn't record it).  This module finds the libraries in it,
reads the MNN version, hashes the libraries for the run manifest, builds
native/mnn_shim against it (cached by sources + MNN libraries), and tells a
cold OpenCL kernel cache from a warm one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from soak.errors import BadInput, BuildFailed, LibraryNotFound
from soak.manifest import sha256_file
from soak.native_build import NATIVE_DIR, cache_root, cmake_build, run_logged

ENV_BUILD = "SOAK_MNN_BUILD"
ENV_SOURCE = "SOAK_MNN_SOURCE"
SHIM_NAME = "libsoak_mnn_shim.so"
KERNEL_CACHE = "mnn_cachefile.bin"  # MNN: <tmp_path or cwd>/mnn_cachefile.bin

_BUILD_FIX = ("build MNN yourself with its LLM and OpenCL options and the separate OpenCL backend "
              "(MNN's docs/transformers/llm.md) and set "
              f"{ENV_BUILD}=<its build folder> ({ENV_SOURCE}=<its source folder>)")
# Where a library may sit in a build folder or an install prefix.
_LIB_DIRS = ("", "lib", "lib64", "express", "transformers/llm/engine", "source/backend/opencl")


@dataclass(frozen=True)
class MnnBuild:
    """One MNN build folder and what soak needs from it."""

    build_dir: Path
    source_dir: Path | None
    libllm: Path
    libmnn: Path
    plugins: list[Path] = field(default_factory=list)  # libMNN_CL.so, ... (load first)
    version: str | None = None

    def library_hashes(self) -> dict[str, str]:
        return {p.name: sha256_file(p) for p in [self.libllm, self.libmnn, *self.plugins, *self.extra_libs()]}

    def extra_libs(self) -> list[Path]:
        """Other MNN libraries the engine loads (libMNN_Express.so with MNN_SEP_BUILD)."""
        found = _find_lib(self.build_dir, "libMNN_Express.so")
        return [found] if found else []

    def opencl_plugin(self) -> Path | None:
        return next((p for p in self.plugins if p.name == "libMNN_CL.so"), None)

    def manifest(self) -> dict:
        return {"build_dir": str(self.build_dir),
                "source_dir": str(self.source_dir) if self.source_dir else None,
                "version": self.version,
                "libllm": str(self.libllm), "libmnn": str(self.libmnn),
                "plugins": [str(p) for p in self.plugins],
                "hashes": self.library_hashes()}




def _find_lib(build_dir: Path, name: str) -> Path | None:
    for sub in _LIB_DIRS:
        candidate = build_dir / sub / name if sub else build_dir / name
        if candidate.is_file():
            return candidate
    return None


def _source_from_cache(build_dir: Path) -> Path | None:
    cache = build_dir / "CMakeCache.txt"
    if not cache.is_file():
        return None
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:INTERNAL="):
            path = Path(line.split("=", 1)[1])
            return path if path.is_dir() else None
    return None


def mnn_version(source_dir: Path | None, libmnn: Path | None = None) -> str | None:
    """MNN version from include/MNN/MNNDefine.h, else from a string in libMNN.so."""
    if source_dir is not None:
        header = source_dir / "include" / "MNN" / "MNNDefine.h"
        if header.is_file():
            parts = dict(re.findall(r"#define\s+MNN_VERSION_(MAJOR|MINOR|PATCH)\s+(\d+)", header.read_text()))
            if len(parts) == 3:
                return f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}"
    if libmnn is not None and libmnn.is_file():
        # getVersion() returns the literal MNN_VERSION, kept in .rodata.
        found = re.search(rb"\x00(\d+\.\d+\.\d+)\x00", libmnn.read_bytes())
        if found:
            return found.group(1).decode()
    return None


def locate(build_dir: str | os.PathLike | None = None,
           source_dir: str | os.PathLike | None = None) -> MnnBuild:
    """Find libllm.so, libMNN.so and the backend plugins of an MNN build.

    Defaults come from SOAK_MNN_BUILD / SOAK_MNN_SOURCE.  Raises
    LibraryNotFound (exit 4) naming what is missing and how to get it.
    """
    raw = build_dir if build_dir is not None else os.environ.get(ENV_BUILD)
    if not raw:
        raise LibraryNotFound(f"no MNN build named ({ENV_BUILD} is not set)", _BUILD_FIX)
    build = Path(raw).expanduser().resolve()
    if not build.is_dir():
        raise LibraryNotFound(f"MNN build folder {build} does not exist", _BUILD_FIX)
    libllm = _find_lib(build, "libllm.so")
    if libllm is None:
        raise LibraryNotFound(f"no libllm.so in MNN build folder {build}",
                              "build MNN with its LLM option, as shared libraries (MNN's docs/transformers/llm.md)")
    libmnn = _find_lib(build, "libMNN.so")
    if libmnn is None:
        raise LibraryNotFound(f"no libMNN.so in MNN build folder {build}",
                              "build MNN as shared libraries (its default)")
    raw_src = source_dir if source_dir is not None else os.environ.get(ENV_SOURCE)
    src = Path(raw_src).expanduser().resolve() if raw_src else _source_from_cache(build)
    if src is not None and not src.is_dir():
        raise BadInput(f"MNN source folder {src} does not exist",
                       f"set {ENV_SOURCE} to the MNN source tree that {build} was built from")
    plugins = [p for p in (_find_lib(build, "libMNN_CL.so"),) if p is not None]
    return MnnBuild(build_dir=build, source_dir=src, libllm=libllm, libmnn=libmnn,
                    plugins=plugins, version=mnn_version(src, libmnn))


def _run(cmd: list[str], log: Path, what: str) -> None:
    """native_build's command runner, with the shim's own one-line CMake errors."""
    try:
        run_logged(cmd, log, what)
    except BuildFailed:
        lines = log.read_text(errors="replace").splitlines()
        # The shim's CMakeLists says what is missing and the fix in one line.
        # CMake wraps it over several lines, up to a blank one.
        starts = [i for i, line in enumerate(lines) if "soak mnn_shim:" in line]
        if not starts:
            raise
        block = []
        for line in lines[starts[-1]:]:
            if not line.strip():
                break
            block.append(line.strip())
        raise BuildFailed(f"{what} failed: {' '.join(block)}", f"full log: {log}") from None


def _shim_key(mnn: MnnBuild) -> str:
    h = hashlib.sha256()
    for base in (NATIVE_DIR / "mnn_shim", NATIVE_DIR / "include"):
        for path in sorted(base.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(NATIVE_DIR)).encode())
                h.update(path.read_bytes())
    h.update(str(mnn.build_dir).encode())
    h.update(str(mnn.source_dir).encode())
    for lib in (mnn.libllm, mnn.libmnn):
        st = lib.stat()
        h.update(f"{lib}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build_shim(mnn_build: str | os.PathLike | MnnBuild | None = None,
               mnn_source: str | os.PathLike | None = None) -> Path:
    """Build native/mnn_shim against an MNN build; return the shim's path.

    Cached under <soak cache>/mnn_shim/<key>: the key covers the shim's
    sources, the MNN folders and the MNN libraries' size and mtime, so a
    rebuilt MNN rebuilds the shim.  Raises BuildFailed (exit 8) with
    CMake's own message (the shim's CMakeLists names what is missing).
    """
    mnn = mnn_build if isinstance(mnn_build, MnnBuild) else locate(mnn_build, mnn_source)
    if mnn.source_dir is None:
        raise BuildFailed(f"MNN source folder unknown for build {mnn.build_dir}",
                          f"set {ENV_SOURCE} to the MNN source tree (the shim needs llm/llm.hpp)")
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildFailed("cannot build the MNN shim: 'cmake' is not on PATH", "install it, e.g. apt-get install cmake")
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise BuildFailed("cannot build the MNN shim: no C++ compiler on PATH", "install it, e.g. apt-get install g++")
    build = cache_root() / "mnn_shim" / _shim_key(mnn)
    return cmake_build(NATIVE_DIR / "mnn_shim", build, SHIM_NAME,
                       [f"-DSOAK_MNN_BUILD={mnn.build_dir}", f"-DSOAK_MNN_SOURCE={mnn.source_dir}"],
                       None, "the MNN shim (native/mnn_shim)", build_type="Release", runner=_run)


def cache_state(tmp_path: str | os.PathLike | None) -> str:
    """"warm" if MNN's OpenCL kernel cache exists in tmp_path (cwd if empty), else "cold"."""
    folder = Path(tmp_path) if tmp_path else Path.cwd()
    cache = folder / KERNEL_CACHE
    return "warm" if cache.is_file() and cache.stat().st_size > 0 else "cold"

"""ctypes loader for engine libraries that implement native/include/soak_engine.h.

Order matters for MNN: backend plugins (libMNN_CL.so) register themselves
from static initializers, and MNN never loads them itself, so they are
loaded first with RTLD_GLOBAL.  Each way loading can fail raises its own
SoakError (and so its own exit code).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from pathlib import Path

from soak.engine import abi
from soak.errors import AbiMismatch, EngineError, LibraryNotFound, MissingSymbol, SoakError, WrongArchitecture

ABI_VERSION = abi.ABI_VERSION
SOAK_OK = abi.OK
_C_TYPES = {"int32_t": ctypes.c_int32, "int64_t": ctypes.c_int64}

TEXT_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


class Perf(ctypes.Structure):
    _fields_ = [(name, _C_TYPES[ctype]) for name, ctype in abi.PERF_FIELDS]


# symbol -> (restype, argtypes)
SIGNATURES = {
    "soak_engine_abi_version": (ctypes.c_uint32, []),
    "soak_engine_name": (ctypes.c_char_p, []),
    "soak_engine_create": (ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "soak_engine_set_config": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "soak_engine_load": (ctypes.c_int, [ctypes.c_void_p]),
    "soak_engine_respond": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                           ctypes.c_int32, TEXT_CB, ctypes.c_void_p]),
    "soak_engine_reset": (ctypes.c_int, [ctypes.c_void_p]),
    "soak_engine_reinit": (ctypes.c_int, [ctypes.c_void_p]),
    "soak_engine_status": (ctypes.c_int, [ctypes.c_void_p]),
    "soak_engine_perf": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(Perf)]),
    "soak_engine_destroy": (None, [ctypes.c_void_p]),
}

_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
_HOST_MACHINE = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
                 "i686": "x86", "armv7l": "arm", "riscv64": "riscv64"}


def elf_machine(path: Path) -> str | None:
    """Architecture an ELF file is built for, or None if it isn't ELF."""
    with path.open("rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    endian = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack(endian + "H", head[18:20])
    return _ELF_MACHINES.get(machine, f"machine {machine}")


def check_loadable(path: Path, what: str) -> None:
    if not path.exists():
        raise LibraryNotFound(f"{what} not found: {path}",
                              "check the path; build the library first (see README)")
    if not path.is_file():
        raise LibraryNotFound(f"{what} is not a file: {path}")
    arch = elf_machine(path)
    host = _HOST_MACHINE.get(platform.machine().lower(), platform.machine())
    if arch is None:
        raise WrongArchitecture(f"{what} is not an ELF shared library: {path}",
                                "pass the .so file itself, not a folder, script or archive")
    if arch != host:
        raise WrongArchitecture(f"{what} is built for {arch}, but this host is {host}: {path}",
                                "build it for this host, or run it on the device with --target adb")


def dlopen(path: Path, what: str, mode: int) -> ctypes.CDLL:
    check_loadable(path, what)
    try:
        return ctypes.CDLL(str(path), mode=mode)
    except OSError as exc:
        text = str(exc)
        if "cannot open shared object file" in text:
            dep = text.split(":")[0].strip() if ":" in text else text
            raise LibraryNotFound(f"{what} {path} needs a library that can't be found: {text}",
                                  f"add the folder holding {dep} to LD_LIBRARY_PATH") from None
        if "wrong ELF class" in text or "invalid ELF header" in text:
            raise WrongArchitecture(f"{what} {path} can't be loaded on this host: {text}") from None
        if "undefined symbol" in text:
            raise MissingSymbol(f"{what} {path} has an unresolved symbol: {text}",
                                "load the library that defines it first with --plugin") from None
        raise LibraryNotFound(f"{what} {path} could not be loaded: {text}") from None


def load_plugins(paths: list[str | os.PathLike]) -> list[ctypes.CDLL]:
    """Load backend plugins globally, in order, before the engine."""
    return [dlopen(Path(p), "backend plugin", os.RTLD_NOW | os.RTLD_GLOBAL) for p in paths]


def load_engine_library(path: str | os.PathLike) -> ctypes.CDLL:
    lib = dlopen(Path(path), "engine library", os.RTLD_NOW | os.RTLD_LOCAL)
    missing = [name for name in SIGNATURES if not hasattr(lib, name)]
    if missing:
        raise MissingSymbol(f"engine library {path} lacks {', '.join(missing)}",
                            "is it a soak engine? build it against native/include/soak_engine.h")
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    version = lib.soak_engine_abi_version()
    if version != ABI_VERSION:
        raise AbiMismatch(f"engine library {path} implements engine ABI v{version}, this soak speaks v{ABI_VERSION}",
                          "rebuild the engine against this soak's native/include/soak_engine.h")
    return lib


class NativeEngine:
    """One engine instance from a library implementing the soak ABI."""

    streams = True  # text arrives through the callback as it is generated

    def __init__(self, lib_path: str, config_path: str, plugins: list[str] = ()):
        self._plugins = load_plugins(list(plugins))
        self.lib = load_engine_library(lib_path)
        self.name = (self.lib.soak_engine_name() or b"").decode(errors="replace")
        err = ctypes.create_string_buffer(1024)
        handle = self.lib.soak_engine_create(os.fsencode(config_path), err, len(err))
        if not handle:
            raise EngineError(f"engine could not be created from {config_path}: "
                              f"{err.value.decode(errors='replace') or 'no reason given'}",
                              "check the model/config path")
        self.handle = ctypes.c_void_p(handle)

    def set_config(self, text: str) -> None:
        rc = self.lib.soak_engine_set_config(self.handle, text.encode())
        if rc != SOAK_OK:
            raise EngineError(f"engine rejected config {text!r} (rc {rc})")

    def load(self) -> bool:
        return self.lib.soak_engine_load(self.handle) == SOAK_OK

    def respond(self, prompt: bytes, max_new_tokens: int, on_chunk=None) -> bytes:
        """on_chunk(): called after each piece of text the engine streams (a token)."""
        chunks: list[bytes] = []
        append = chunks.append

        if on_chunk is None:
            def on_text(data, length, _user):
                append(ctypes.string_at(data, length))
                return 0
        else:
            def on_text(data, length, _user):
                append(ctypes.string_at(data, length))
                on_chunk()
                return 0

        cb = TEXT_CB(on_text)
        rc = self.lib.soak_engine_respond(self.handle, prompt, len(prompt), max_new_tokens, cb, None)
        if rc != SOAK_OK:
            raise EngineError(f"respond failed with rc {rc}")
        return b"".join(chunks)

    def reset(self) -> None:
        self.lib.soak_engine_reset(self.handle)

    def reinit(self) -> None:
        self.lib.soak_engine_reinit(self.handle)

    def status(self) -> int:
        return int(self.lib.soak_engine_status(self.handle))

    def perf(self) -> dict:
        p = Perf()
        self.lib.soak_engine_perf(self.handle, ctypes.byref(p))
        return {name: int(getattr(p, name)) for name, _ in Perf._fields_}

    def close(self) -> None:
        if self.handle:
            self.lib.soak_engine_destroy(self.handle)
            self.handle = None

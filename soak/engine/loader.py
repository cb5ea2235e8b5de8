"""ctypes loader for engine libraries that implement native/include/soak_engine.h.

A library of ABI v1 (or one without all of the optional oracle functions)
loads and runs as before; `NativeEngine.oracle_available` is then False and
its oracle methods raise OracleUnavailable, which says why.

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
from soak.errors import (AbiMismatch, BadInput, EngineError, LibraryNotFound, MissingSymbol, OracleUnavailable,
                         SoakError, WrongArchitecture)

ABI_VERSION = abi.ABI_VERSION
ABI_MIN_VERSION = abi.ABI_MIN_VERSION
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

_P_I32 = ctypes.POINTER(ctypes.c_int32)
_P_F32 = ctypes.POINTER(ctypes.c_float)
# the optional oracle functions (ABI 2): used only when all of them are there
ORACLE_SIGNATURES = {
    "soak_engine_tokenize": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                            ctypes.POINTER(_P_I32), ctypes.POINTER(ctypes.c_size_t)]),
    "soak_engine_forward": (ctypes.c_int, [ctypes.c_void_p, _P_I32, ctypes.c_size_t, ctypes.c_int32,
                                           ctypes.POINTER(_P_F32), _P_I32]),
    "soak_engine_is_stop": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32]),
    "soak_engine_token_bytes": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32,
                                               ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]),
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
    if not ABI_MIN_VERSION <= version <= ABI_VERSION:
        raise AbiMismatch(f"engine library {path} implements engine ABI v{version}, this soak speaks "
                          f"v{ABI_MIN_VERSION} to v{ABI_VERSION}",
                          "rebuild the engine against this soak's native/include/soak_engine.h")
    for name, (restype, argtypes) in ORACLE_SIGNATURES.items():
        if hasattr(lib, name):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    return lib


def oracle_missing(lib: ctypes.CDLL) -> str | None:
    """Why this library cannot serve the logits oracle, or None when it can."""
    version = lib.soak_engine_abi_version()
    if version < abi.ORACLE_SINCE:
        return (f"it implements engine ABI v{version}; the oracle functions "
                f"(soak_engine_{', soak_engine_'.join(abi.ORACLE_FUNCTIONS)}) came with v{abi.ORACLE_SINCE}")
    missing = [name for name in ORACLE_SIGNATURES if not hasattr(lib, name)]
    if missing:
        return f"it lacks {', '.join(missing)}"
    return None


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
        self.oracle_unavailable = oracle_missing(self.lib)   # None: the oracle works
        self.vocab = 0        # known after the first forward

    @property
    def oracle_available(self) -> bool:
        return self.oracle_unavailable is None

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

    # -- the logits oracle (optional, ABI 2) ---------------------------------
    def _oracle(self, what: str):
        if self.oracle_unavailable is not None:
            raise OracleUnavailable(f"the engine {self.name!r} cannot {what}: {self.oracle_unavailable}",
                                    "rebuild it against this soak's native/include/soak_engine.h "
                                    "(the oracle functions are optional; see its comments)")
        return self.lib

    def _check(self, rc: int, what: str) -> None:
        if rc != SOAK_OK:
            names = {code: name for name, code in abi.RETURN_CODES.items()}
            raise EngineError(f"{what} failed with rc {rc} ({names.get(rc, 'unknown')}), status {self.status()}")

    def tokenize(self, prompt: bytes) -> list[int]:
        """The token ids respond(prompt) would feed (the chat template applied)."""
        lib = self._oracle("tokenize")
        ids, n = _P_I32(), ctypes.c_size_t()
        self._check(lib.soak_engine_tokenize(self.handle, prompt, len(prompt), ctypes.byref(ids), ctypes.byref(n)),
                    "tokenize")
        return ids[:n.value] if n.value else []

    def forward(self, ids, prefill: bool) -> memoryview:
        """Run ids through the engine's forward (prefill: start a turn); the last position's
        logits as a float32 memoryview of `vocab` items. It points into the engine's memory
        and is valid until the next call on this engine: copy what must outlive it."""
        lib = self._oracle("run forward")
        ids = list(ids)
        if not ids:
            raise BadInput("forward needs at least one token id")
        if any(not isinstance(t, int) or t < 0 or (self.vocab and t >= self.vocab) for t in ids):
            bad = next(t for t in ids if not isinstance(t, int) or t < 0 or (self.vocab and t >= self.vocab))
            raise BadInput(f"token id {bad!r} is outside the vocabulary [0, {self.vocab or '?'})")
        arr = (ctypes.c_int32 * len(ids))(*ids)
        out, vocab = _P_F32(), ctypes.c_int32()
        rc = lib.soak_engine_forward(self.handle, arr, len(ids), 1 if prefill else 0,
                                     ctypes.byref(out), ctypes.byref(vocab))
        self._check(rc, "forward")
        if vocab.value <= 0 or not out:
            raise EngineError(f"forward returned no logits (vocab {vocab.value})")
        self.vocab = vocab.value
        buf = (ctypes.c_float * vocab.value).from_address(ctypes.addressof(out.contents))
        return memoryview(buf).cast("B").cast("f")

    def is_stop(self, token: int) -> bool:
        rc = self._oracle("tell stop tokens").soak_engine_is_stop(self.handle, int(token))
        if rc < 0:
            self._check(rc, "is_stop")
        return rc == 1

    def token_bytes(self, token: int) -> bytes:
        lib = self._oracle("decode tokens")
        data, n = ctypes.c_void_p(), ctypes.c_size_t()
        self._check(lib.soak_engine_token_bytes(self.handle, int(token), ctypes.byref(data), ctypes.byref(n)),
                    "token_bytes")
        return ctypes.string_at(data.value, n.value) if n.value else b""

    def close(self) -> None:
        if self.handle:
            self.lib.soak_engine_destroy(self.handle)
            self.handle = None

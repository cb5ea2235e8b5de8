"""Symbols of an ELF file, read after a crash: file offset -> ELF address -> the
function around it, and C++ names demangled.

soak's crash handler (native/crash) records each frame as a file offset in its
module (what /proc/self/maps tells, async-signal-safe); this turns it into what
a tombstone shows: the address in the ELF (`pc`) and `symbol+offset`, from
.symtab, else .dynsym (a stripped library keeps its exported names).  Only the
ELF headers, the section headers and the symbol tables are read.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from functools import lru_cache

_SHT_SYMTAB, _SHT_DYNSYM, _PT_LOAD = 2, 11, 1
_STT_FUNC, _STT_GNU_IFUNC = 2, 10


@dataclass
class ElfSymbols:
    path: str
    loads: list        # [(p_offset, p_vaddr, p_filesz)] of the PT_LOAD segments
    addrs: list        # symbol start addresses, sorted
    syms: list         # [(addr, size, name)] in the same order

    def vaddr(self, file_offset: int) -> int | None:
        """The ELF address of a byte at file_offset (None: in no loaded segment)."""
        for off, vaddr, size in self.loads:
            if off <= file_offset < off + max(size, 1):
                return file_offset - off + vaddr
        return None

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of the function holding addr."""
        i = bisect.bisect_right(self.addrs, addr) - 1
        while i >= 0:
            start, size, name = self.syms[i]
            if start <= addr < start + max(size, 1):
                return name, addr - start
            if size:  # a sized function that ends before addr: addr is in none
                return None
            i -= 1
        return None


def _read_elf(path: str) -> ElfSymbols | None:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF":
                return None
            is64, end = head[4] == 2, "<" if head[5] == 1 else ">"
            if is64:
                phoff, shoff = struct.unpack_from(end + "QQ", head, 32)
                phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", head, 54)
            else:
                phoff, shoff = struct.unpack_from(end + "II", head, 28)
                phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", head, 42)
            loads = []
            f.seek(phoff)
            ph = f.read(phentsize * phnum)
            for i in range(phnum):
                if is64:
                    p_type, _fl, p_off, p_vaddr, _pa, p_filesz = struct.unpack_from(end + "IIQQQQ", ph, i * phentsize)
                else:
                    p_type, p_off, p_vaddr, _pa, p_filesz = struct.unpack_from(end + "IIIII", ph, i * phentsize)
                if p_type == _PT_LOAD:
                    loads.append((p_off, p_vaddr, p_filesz))
            f.seek(shoff)
            sh = f.read(shentsize * shnum)
            sections = []
            for i in range(shnum):
                if is64:
                    _n, s_type, _fl, _a, s_off, s_size, s_link, _i, _al, s_entsize = struct.unpack_from(
                        end + "IIQQQQIIQQ", sh, i * shentsize)
                else:
                    _n, s_type, _fl, _a, s_off, s_size, s_link, _i, _al, s_entsize = struct.unpack_from(
                        end + "IIIIIIIIII", sh, i * shentsize)
                sections.append((s_type, s_off, s_size, s_link, s_entsize))
            found: dict[int, tuple[int, str]] = {}
            for wanted in (_SHT_SYMTAB, _SHT_DYNSYM):  # .symtab first: it has the local functions too
                for s_type, s_off, s_size, s_link, s_entsize in sections:
                    if s_type != wanted or not s_entsize or s_link >= len(sections):
                        continue
                    f.seek(sections[s_link][1])
                    strtab = f.read(sections[s_link][2])
                    f.seek(s_off)
                    table = f.read(s_size)
                    for k in range(len(table) // s_entsize):
                        if is64:
                            st_name, st_info, _o, st_shndx, st_value, st_size = struct.unpack_from(
                                end + "IBBHQQ", table, k * s_entsize)
                        else:
                            st_name, st_value, st_size, st_info, _o, st_shndx = struct.unpack_from(
                                end + "IIIBBH", table, k * s_entsize)
                        if st_info & 0xF not in (_STT_FUNC, _STT_GNU_IFUNC) or not st_value or not st_shndx:
                            continue
                        if st_value in found and found[st_value][0]:
                            continue
                        name = strtab[st_name:strtab.index(b"\0", st_name)].decode("utf-8", "replace")
                        if name:
                            found[st_value] = (st_size, name)
    except (OSError, struct.error, ValueError, IndexError):
        return None
    syms = sorted((addr, size, name) for addr, (size, name) in found.items())
    return ElfSymbols(path, loads, [s[0] for s in syms], syms)


@lru_cache(maxsize=256)
def _cached(path: str, mtime_ns: int, size: int) -> ElfSymbols | None:
    return _read_elf(path)


def load(path: str) -> ElfSymbols | None:
    """The symbols of the ELF file at path (cached while the file is unchanged); None if
    it is not a readable ELF file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _cached(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=1)
def _cxa_demangle():
    for name in ("stdc++", "c++"):
        found = ctypes.util.find_library(name)
        if not found:
            continue
        try:
            fn = ctypes.CDLL(found).__cxa_demangle
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t),
                       ctypes.POINTER(ctypes.c_int)]
        return fn
    return None


@lru_cache(maxsize=4096)
def demangle(name: str) -> str:
    """A C++ name (_Z...) demangled by the C++ runtime's __cxa_demangle, else c++filt; other
    names as they are."""
    if not name.startswith("_Z"):
        return name
    fn = _cxa_demangle()
    if fn is not None:
        status = ctypes.c_int(1)
        ptr = fn(name.encode(), None, None, ctypes.byref(status))
        if ptr and status.value == 0:
            text = ctypes.string_at(ptr).decode("utf-8", "replace")
            ctypes.CDLL(None).free(ctypes.c_void_p(ptr))
            return text
    tool = shutil.which("c++filt")
    if tool:
        try:
            out = subprocess.run([tool, name], capture_output=True, text=True, timeout=5).stdout.strip()
            return out or name
        except (OSError, subprocess.SubprocessError):
            pass
    return name

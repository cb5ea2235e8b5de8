"""The interposer's stats file layout, read from native/interposer/stats_layout.h.

That header is the one declaration: the interposer maps its structs, and this module reads
the same text into field names, offsets and `struct` formats for soak.cl.trace, so a field
added or moved there moves here too.  It reads the plain subset the header keeps to
(`typedef struct { ... } soak_stats_*;`, one fixed-width integer or char field per
statement, arrays sized by a number or a #define; natural alignment, little-endian) and
refuses anything else by name.  tests/cl/test_stats_layout.py compiles a probe that prints
offsetof/sizeof of every field read here and compares.

    layout = load()
    hdr = layout.struct("soak_stats_header")
    hdr.offset("epoch"), hdr.size, hdr.unpack(data)["calls"], layout.define("SOAK_STATS_MAGIC")
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from soak.native_build import NATIVE_DIR

HEADER_FILE = NATIVE_DIR / "interposer" / "stats_layout.h"

# C type -> (struct code, size = alignment)
_TYPES = {
    "char": ("s", 1),
    "int8_t": ("b", 1), "uint8_t": ("B", 1),
    "int16_t": ("h", 2), "uint16_t": ("H", 2),
    "int32_t": ("i", 4), "uint32_t": ("I", 4),
    "int64_t": ("q", 8), "uint64_t": ("Q", 8),
}


class LayoutError(RuntimeError):
    """stats_layout.h holds something this reader does not know (a broken install, or a header
    edit that left the subset this module reads)."""


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    count: int | None  # array length; None for a scalar
    offset: int
    size: int  # bytes, the whole array


class Struct:
    """One soak_stats_* struct: its fields in order, with offsets as the C compiler places them."""

    def __init__(self, name: str, fields: list[Field], size: int):
        self.name = name
        self.fields = tuple(fields)
        self.size = size
        self._by_name = {f.name: f for f in fields}
        fmt, self._groups, at = ["<"], [], 0
        for f in fields:
            if f.offset > at:
                fmt.append(f"{f.offset - at}x")
            code = _TYPES[f.ctype][0]
            if f.ctype == "char":
                fmt.append(f"{f.count or 1}s")
                self._groups.append((f.name, 0))  # bytes
            elif f.count is None:
                fmt.append(code)
                self._groups.append((f.name, 0))
            else:
                fmt.append(f"{f.count}{code}")
                self._groups.append((f.name, f.count))  # a tuple
            at = f.offset + f.size
        if size > at:
            fmt.append(f"{size - at}x")
        self.format = struct.Struct("".join(fmt))
        assert self.format.size == size

    def offset(self, name: str) -> int:
        return self.field(name).offset

    def field(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise LayoutError(f"{self.name} has no field {name!r} in {HEADER_FILE}") from None

    def pack_field(self, name: str, value: int) -> bytes:
        """A scalar integer field's bytes, to write in place at offset(name)."""
        f = self.field(name)
        if f.count is not None or f.ctype == "char":
            raise LayoutError(f"{self.name}.{name} is an array, not a scalar")
        return struct.pack("<" + _TYPES[f.ctype][0], value)

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def unpack(self, data: bytes, offset: int = 0) -> dict:
        """field -> value: int, bytes for char arrays, a tuple for other arrays."""
        vals = self.format.unpack_from(data, offset)
        out, i = {}, 0
        for name, n in self._groups:
            if n:
                out[name] = vals[i:i + n]
                i += n
            else:
                out[name] = vals[i]
                i += 1
        return out


@dataclass(frozen=True)
class Layout:
    structs: dict[str, Struct]
    defines: dict[str, int | str]
    path: Path

    def struct(self, name: str) -> Struct:
        try:
            return self.structs[name]
        except KeyError:
            raise LayoutError(f"{self.path} declares no struct {name}") from None

    def define(self, name: str) -> int | str:
        try:
            return self.defines[name]
        except KeyError:
            raise LayoutError(f"{self.path} has no #define {name}") from None


def _defines(text: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+(\S.*?)[ \t]*$", text, re.M):
        value = m.group(2)
        s = re.fullmatch(r'"([^"\\]*)"', value)
        n = re.fullmatch(r"(0x[0-9a-fA-F]+|\d+)[uUlL]*", value)
        if s:
            out[m.group(1)] = s.group(1)
        elif n:
            out[m.group(1)] = int(n.group(1), 0)
    return out


def parse(text: str, path: Path = HEADER_FILE) -> Layout:
    """The soak_stats_* structs and the #defines of a header's text."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    defines = _defines(text)
    structs: dict[str, Struct] = {}
    for m in re.finditer(r"typedef\s+struct\s*\w*\s*\{([^{}]*)\}\s*(\w+)\s*;", text):
        body, sname = m.group(1), m.group(2)
        if not sname.startswith("soak_stats_"):
            continue
        fields, at, align = [], 0, 1
        for stmt in body.split(";"):
            stmt = " ".join(stmt.split())
            if not stmt:
                continue
            f = re.fullmatch(r"(\w+) (\w+) ?(?:\[ ?(\w+) ?\])?", stmt)
            if not f or f.group(1) not in _TYPES:
                raise LayoutError(f"{path}: {sname}: cannot read field '{stmt}' (want one "
                                  f"{'/'.join(_TYPES)} field per statement, optionally an array)")
            ctype, name, dim = f.groups()
            count = None
            if dim is not None:
                count = int(dim) if dim.isdigit() else defines.get(dim)
                if not isinstance(count, int) or count <= 0:
                    raise LayoutError(f"{path}: {sname}.{name}: array size {dim} is not a number or a #define of one")
            size = _TYPES[ctype][1]
            at = (at + size - 1) // size * size
            fields.append(Field(name, ctype, count, at, size * (count or 1)))
            at += size * (count or 1)
            align = max(align, size)
        if not fields:
            raise LayoutError(f"{path}: {sname} has no fields")
        structs[sname] = Struct(sname, fields, (at + align - 1) // align * align)
    return Layout(structs, defines, path)


def load(path: Path = HEADER_FILE) -> Layout:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LayoutError(f"cannot read the interposer's stats layout {path}: {exc.strerror} "
                          "(soak ships native/ as package data: reinstall it)") from None
    return parse(text, Path(path))

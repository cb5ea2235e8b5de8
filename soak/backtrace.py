"""Native backtraces of a crash, from wherever they were written, and the frame
that titles the crash.

Three sources, one frame line each:
  soak's crash handler (native/crash), in engine.log:
      `    #00 fo 0000000000001a2b  /path/module.so`   (a FILE offset, not yet symbolized)
  an Android tombstone, or logcat's DEBUG lines of one (any prefix before `#`):
      `    #00 pc 000000000001e8d0  /system/lib64/libc.so (abort+120) (BuildId: ...)`
  gdb's `bt`, as pasted into bug reports:
      `#0  0x00007fffd4c0e1a3 in _pocl_kernel_softmax_inside_workgroup () from /x/softmax_inside.so`
`symbolized()` turns soak's lines into tombstone lines (ELF address, `symbol+off`)
from the module files, which are on this machine for a local worker
(soak.elf_symbols); the `backtrace` field of a crash event holds those lines.

`title_frame()` names the first frame outside libc, the dynamic loader, the
unwinder and soak itself: a C++ function without its parameters
(`MNN::OpenCL::AttentionBufExecution::onResize`), a PoCL-compiled OpenCL kernel
as `softmax_inside (OpenCL kernel)` (PoCL names its kernel functions
`_pocl_kernel_<name>[_workgroup[_fast]]` in the .so files of its kcache), a
frame without a symbol as `module+0xoffset`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from soak import elf_symbols

# `#NN pc|fo HEX  module (...)`, anywhere in a line (logcat and soak-adb prefixes before it)
_FRAME = re.compile(r"#(\d{1,3})\s+(pc|fo)\s+(?:0x)?([0-9a-fA-F]+)\s+(\S+)((?:\s+\(.*\))?)\s*$")
_GDB = re.compile(r"^\s*#(\d{1,3})\s+(?:0x([0-9a-fA-F]+) in )?([^\s(]+) \(.*?\)(?:\s+at \S+|\s+from (\S+))?\s*$")
_PAREN = re.compile(r"\(([^()]*(?:\([^()]*\)[^()]*)*)\)")
_SYM_OFF = re.compile(r"^(.*)\+(\d+|0x[0-9a-fA-F]+)$")
HEADER = re.compile(r"\*\*\* soak: (?:fatal signal|end of backtrace)|^\s*soak backtrace \(file offsets\):")
_CLONE_SUFFIX = re.compile(r"(?:\.(?:cold|part|isra|constprop|lto_priv|localalias)(?:\.\d+)?)+$")
_POCL_KERNEL = re.compile(r"^_?_pocl_kernel_(\w+?)(?:_workgroup(?:_fast)?)?$")

# modules no crash is titled by: libc and its parts, the loaders, the unwinders, soak's own
_SKIP_MODULE = re.compile(
    r"^(?:libc(?:\+\+(?:abi)?(?:_shared)?)?|libpthread|libdl|librt|libm|ld-linux[\w.-]*|ld-musl[\w.-]*|ld|linker(?:64)?"
    r"|libgcc_s|libunwind(?:stack)?|libbacktrace|libstdc\+\+|libsoak_crash|soak-runner)(?:[.-].*)?$")
_SKIP_SYMBOL = re.compile(r"^(?:__restore_rt|__kernel_rt_sigreturn|_?_?GI_|abort$|raise$|__pthread_kill|pthread_kill"
                          r"|__cxa_throw|__gnu_cxx::__verbose_terminate_handler|std::terminate|__assert_fail"
                          r"|__libc_|__fortify_fail|__stack_chk_fail|__chk_fail|faulthandler_)")


@dataclass(frozen=True)
class Frame:
    index: int
    form: str            # "pc": an ELF address (tombstone, gdb); "fo": a file offset (soak's handler)
    addr: int
    module: str          # path as the device saw it ("" when gdb did not say)
    symbol: str | None   # as recorded (maybe mangled)
    sym_off: int | None

    @property
    def base(self) -> str:
        return self.module.rstrip("/").rsplit("/", 1)[-1]

    def line(self) -> str:
        sym = ""
        if self.symbol:
            sym = f" ({self.symbol}+{self.sym_off})" if self.sym_off is not None else f" ({self.symbol})"
        return f"#{self.index:02d} {self.form} {self.addr:016x}  {self.module or '[unknown]'}{sym}"


def parse_line(text: str) -> Frame | None:
    m = _FRAME.search(text)
    if m:
        symbol = off = None
        for inner in _PAREN.findall(m.group(5) or ""):
            if inner.startswith(("BuildId:", "offset 0x")) or not inner:
                continue
            sm = _SYM_OFF.match(inner)
            symbol, off = (sm.group(1), int(sm.group(2), 0)) if sm else (inner, None)
            break
        return Frame(int(m.group(1)), m.group(2), int(m.group(3), 16), m.group(4), symbol, off)
    m = _GDB.match(text)
    if m and m.group(3) != "??":
        return Frame(int(m.group(1)), "pc", int(m.group(2) or "0", 16), m.group(4) or "", m.group(3), None)
    return None


def is_backtrace_line(text: str) -> bool:
    """A line of a backtrace or of the handler's header (kept out of a crash's last lines)."""
    return bool(HEADER.search(text)) or _FRAME.search(text) is not None


def blocks(lines) -> list[list[Frame]]:
    """The backtraces in lines, each a list of frames (a new one starts at frame #0)."""
    found: list[list[Frame]] = []
    for text in lines:
        f = parse_line(str(text))
        if f is None:
            continue
        if f.index == 0 or not found or f.index <= found[-1][-1].index:
            found.append([])
        found[-1].append(f)
    return found


def symbolize(frames: list[Frame], local=None) -> list[Frame]:
    """soak's file-offset frames as tombstone frames (ELF address, symbol) where the module
    file is here and an ELF file; others as they are.  local: the path on this machine of a
    module path as the worker saw it (a device's copy of a pushed library: the file pushed),
    None when there is none; without it, the path itself."""
    out = []
    for f in frames:
        here = (local(f.module) if local is not None else f.module) if f.module.startswith("/") else None
        if f.form == "fo" and here:
            elf = elf_symbols.load(here)
            vaddr = elf.vaddr(f.addr) if elf is not None else None
            if vaddr is not None:
                # a caller's pc is its return address: look up the call before it
                hit = elf.lookup(vaddr - (1 if f.index > 0 else 0))
                sym, off = (hit[0], hit[1] + (1 if f.index > 0 else 0)) if hit else (None, None)
                f = replace(f, form="pc", addr=vaddr, symbol=sym, sym_off=off)
        out.append(f)
    return out


def crash_backtrace(lines, local=None) -> list[str]:
    """The crashing thread's backtrace in lines, symbolized (`local`: see symbolize), as
    tombstone lines ([] if none).  With several (soak's handler and the device's tombstone of
    the same crash), the one with the most named frames."""
    best: list[Frame] = []
    for block in blocks(lines):
        block = symbolize(block, local)
        if sum(1 for f in block if f.symbol) > sum(1 for f in best if f.symbol) or not best:
            best = block
    return [f.line() for f in best]


def frame_name(f: Frame) -> str:
    """How a frame is named in a title."""
    if f.symbol:
        symbol = _CLONE_SUFFIX.sub("", f.symbol)  # GCC's split-off parts and clones: the function's name
        m = _POCL_KERNEL.match(symbol)
        if m:
            return f"{m.group(1)} (OpenCL kernel)"
        return _strip_params(elf_symbols.demangle(symbol))
    if not f.module.startswith("/"):
        return f.module or "?"  # [anon], [unknown]: an address would change run to run
    return f"{f.base}+0x{f.addr:x}"


def _strip_params(name: str) -> str:
    """`ns::f(int, std::vector<int> const&) const` -> `ns::f` (a template's <...> kept)."""
    depth = 0
    for i, ch in enumerate(name):
        if ch in "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0 and not name.startswith("(anonymous", i):
            return name[:i]
    return name


def _skipped(f: Frame) -> bool:
    if f.base and _SKIP_MODULE.match(f.base):
        return True
    if not f.symbol and not f.module.startswith("/"):
        return True  # anonymous memory (JIT code): no name, and its address changes run to run
    return bool(f.symbol and _SKIP_SYMBOL.match(elf_symbols.demangle(f.symbol)))


def _best_block(lines) -> list:
    """The backtrace of these lines with the most symbols, symbolized ([] when there is none)."""
    found = blocks(lines)
    if not found:
        return []
    best = max(found, key=lambda b: sum(1 for f in b if f.symbol))
    return symbolize(best) if any(f.form == "fo" for f in best) else best


def title_frames(lines, n: int = 1) -> list[str]:
    """Names of the first n frames outside libc, the loader and soak (the first frames, when
    every one is such)."""
    best = _best_block(lines)
    kept = [f for f in best if not _skipped(f)] or best
    return [frame_name(f) for f in kept[:n]]


def title_frame(lines) -> str | None:
    names = title_frames(lines, 1)
    return names[0] if names else None


def frame_names(lines) -> list[str]:
    """Every frame's name (a catalog `frame` match looks through them all)."""
    return [frame_name(f) for f in _best_block(lines)]

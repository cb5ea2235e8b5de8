#!/usr/bin/env python3
"""Generate the interposer's forwarding wrappers from the installed OpenCL headers.

Run by CMake at build time (Python 3 standard library only):

    gen_wrappers.py --cc "<C compiler and flags>" --include-dir /usr/include --out-dir <dir>
                    [--codes cl_error_codes.tsv]

It runs the C preprocessor (the compiler CMake uses, so the answer is right for
the target: Linux x86-64, Android aarch64, ...) over every OpenCL header it
finds under <include-dir>/CL that preprocesses on its own, keeps the
declarations that come from those headers, and writes:

  cl_api.h       SOAK_N_API, SOAK_ID_<name> for every entry point
  cl_wrappers.c  one exported wrapper per entry point, the name table and the
                 wrapper table for clGetExtensionFunctionAddress
  cl_codes.c     the error-name table, from cl_error_codes.tsv (the one table of
                 CL error names; soak.cl_codes reads the same file)
  cl_api.txt     the list of entry points, one per line (for tests and docs)

Headers that need another platform's headers or types (D3D, DX9, VA-API)
do not compile here and are skipped with a note.  cl_icd.h and cl_layer.h describe the
loader and layer interfaces, not the application API, and are never read.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

SKIP_HEADERS = {"cl_icd.h", "cl_layer.h", "cl_platform.h", "cl_version.h", "cl_half.h", "opencl.h"}
FIRST_HEADERS = ["cl.h", "cl_ext.h", "cl_gl.h", "cl_egl.h"]
DEFINES = [
    "CL_TARGET_OPENCL_VERSION=300",
    "CL_USE_DEPRECATED_OPENCL_1_0_APIS", "CL_USE_DEPRECATED_OPENCL_1_1_APIS",
    "CL_USE_DEPRECATED_OPENCL_1_2_APIS", "CL_USE_DEPRECATED_OPENCL_2_0_APIS",
    "CL_USE_DEPRECATED_OPENCL_2_1_APIS", "CL_USE_DEPRECATED_OPENCL_2_2_APIS",
    "CL_ENABLE_BETA_EXTENSIONS",
]
# negative #defines that are not error codes (build status values, a list terminator)
NOT_ERROR_CODES = {"CL_BUILD_NONE", "CL_BUILD_ERROR", "CL_BUILD_IN_PROGRESS", "CL_PARTITION_BY_NAMES_LIST_END_INTEL"}
# the one table of CL error names (code, name, where defined), read by soak.cl_codes too
CODES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cl_error_codes.tsv")
# written by hand in core.c
HAND_WRITTEN = {"clGetExtensionFunctionAddress", "clGetExtensionFunctionAddressForPlatform"}
# return types whose value is a new reference the application must release
OBJECT_TYPES = {
    "cl_context": "SOAK_OBJ_CONTEXT", "cl_command_queue": "SOAK_OBJ_QUEUE", "cl_mem": "SOAK_OBJ_MEM_OTHER",
    "cl_program": "SOAK_OBJ_PROGRAM", "cl_kernel": "SOAK_OBJ_KERNEL", "cl_event": "SOAK_OBJ_EVENT",
    "cl_sampler": "SOAK_OBJ_SAMPLER",
}
# clGet*Info entry points: the prefix of the names their param_name takes (and prefixes to leave out
# where one family's names share another's prefix); others: any CL_ name
INFO_PREFIXES = {
    "clGetPlatformInfo": ("CL_PLATFORM_", ()), "clGetDeviceInfo": ("CL_DEVICE_", ()),
    "clGetContextInfo": ("CL_CONTEXT_", ()), "clGetCommandQueueInfo": ("CL_QUEUE_", ()),
    "clGetMemObjectInfo": ("CL_MEM_", ()), "clGetImageInfo": ("CL_IMAGE_", ()),
    "clGetPipeInfo": ("CL_PIPE_", ()), "clGetSamplerInfo": ("CL_SAMPLER_", ()),
    "clGetProgramInfo": ("CL_PROGRAM_", ()), "clGetProgramBuildInfo": ("CL_PROGRAM_", ()),
    "clGetKernelInfo": ("CL_KERNEL_", ("CL_KERNEL_ARG_",)), "clGetKernelArgInfo": ("CL_KERNEL_ARG_", ()),
    "clGetKernelWorkGroupInfo": ("CL_KERNEL_", ("CL_KERNEL_ARG_",)),
    "clGetKernelSubGroupInfo": ("CL_KERNEL_", ("CL_KERNEL_ARG_",)),
    "clGetKernelSubGroupInfoKHR": ("CL_KERNEL_", ("CL_KERNEL_ARG_",)),
    "clGetEventInfo": ("CL_EVENT_", ()), "clGetEventProfilingInfo": ("CL_PROFILING_", ()),
}
C_KEYWORDS = {"const", "volatile", "struct", "union", "enum", "unsigned", "signed", "void", "char", "short",
              "int", "long", "float", "double", "restrict", "__restrict"}


class Param:
    def __init__(self, text: str, index: int, typedefs: set[str]):
        self.text = " ".join(text.split())
        fp = re.search(r"\(\s*\*\s*(\w+)\s*\)", self.text)
        if fp:  # function pointer: void (*pfn_notify)(...)
            self.name = fp.group(1)
            self.decl = self.text
            return
        arr = re.search(r"(\w+)\s*(\[[^\]]*\])+\s*$", self.text)
        if arr:
            self.name = arr.group(1)
            self.decl = self.text
            return
        toks = re.findall(r"\w+|\*", self.text)
        last = toks[-1] if toks else ""
        if len(toks) < 2 or last == "*" or last in C_KEYWORDS or last in typedefs:
            self.name = f"soak_a{index}"  # unnamed parameter
            self.decl = f"{self.text} {self.name}"
        else:
            self.name = last
            self.decl = self.text
        self.type = self.decl[: self.decl.rfind(self.name)].strip()

    @property
    def ctype(self) -> str:
        return getattr(self, "type", "")


class Api:
    def __init__(self, name: str, ret: str, params: list[Param], header: str):
        self.name, self.ret, self.params, self.header = name, ret, params, header

    @property
    def errcode(self) -> Param | None:
        for p in self.params:
            if p.name == "errcode_ret" and "cl_int" in p.ctype and "*" in p.ctype:
                return p
        return None

    @property
    def event_out(self) -> Param | None:
        for p in self.params:
            if p.name == "event" and re.fullmatch(r"cl_event\s*\*", p.ctype):
                return p
        return None

    def proto(self) -> str:
        args = ", ".join(p.decl for p in self.params) or "void"
        return f"{self.ret} CL_API_CALL {self.name}({args})"


def split_top(text: str, sep: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def strip_attributes(text: str) -> str:
    # __attribute__((...)) and __declspec(...) with nested parentheses
    while True:
        m = re.search(r"__attribute__\s*\(|__declspec\s*\(", text)
        if not m:
            return text
        i, depth = m.end() - 1, 0
        for j in range(i, len(text)):
            if text[j] == "(":
                depth += 1
            elif text[j] == ")":
                depth -= 1
                if depth == 0:
                    text = text[: m.start()] + " " + text[j + 1:]
                    break
        else:
            return text


def typedef_name(stmt: str) -> str | None:
    """The name a typedef statement declares, in every style the CL headers use:
    typedef struct {...} NAME;  typedef T NAME[4];  typedef T (CL_API_CALL *NAME)(params);
    and the function types of cl_function_types.h: typedef T CL_API_CALL NAME(params);
    (the parameter names of a function type are not type names)."""
    s = strip_attributes(stmt)
    while True:  # struct/union/enum bodies, innermost first
        t = re.sub(r"\{[^{}]*\}", " ", s)
        if t == s:
            break
        s = t
    s = " ".join(s.split())
    fp = re.search(r"\(\s*(?:\w+\s+)*\*\s*(\w+)\s*\)\s*\(", s)  # pointer to function
    if fp:
        return fp.group(1)
    paren = s.find("(")
    if paren >= 0:  # function type: the name is the identifier right before the parameter list
        m = re.search(r"(\w+)\s*$", s[:paren])
        return m.group(1) if m else None
    s = re.sub(r"\[[^\]]*\]", " ", s)  # arrays
    names = re.findall(r"\w+", s)
    return names[-1] if len(names) > 1 else None


def preprocess(cc: list[str], include_dir: str, headers: list[str], syntax_only: bool = False) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            for d in DEFINES:
                name, _, value = d.partition("=")
                f.write(f"#define {name} {value}\n")
            for h in headers:
                f.write(f"#include <CL/{h}>\n")
        mode = ["-fsyntax-only"] if syntax_only else ["-E", "-dD"]
        proc = subprocess.run([*cc, *mode, "-I", include_dir, src], capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "error" in ln] or ["preprocessor failed"]
            raise RuntimeError(lines[0].strip())
        return proc.stdout


def find_headers(cc: list[str], include_dir: str) -> tuple[list[str], list[str]]:
    cl_dir = os.path.join(include_dir, "CL")
    if not os.path.isfile(os.path.join(cl_dir, "cl.h")):
        sys.exit(f"gen_wrappers: no CL/cl.h under {include_dir}; install opencl-c-headers "
                 f"(Debian) or pass -DSOAK_CL_INCLUDE_DIR=<dir with CL/cl.h>")
    names = sorted(n for n in os.listdir(cl_dir) if n.endswith(".h") and n not in SKIP_HEADERS)
    names = [h for h in FIRST_HEADERS if h in names] + [h for h in names if h not in FIRST_HEADERS]
    used, skipped = [], []
    for h in names:
        try:
            preprocess(cc, include_dir, used + [h], syntax_only=True)  # compiles on this target?
            used.append(h)
        except RuntimeError as exc:
            skipped.append(f"{h}: {exc}")
    return used, skipped


def read_codes(path: str) -> list[tuple[int, str, str]]:
    """cl_error_codes.tsv -> [(code, name, defined in)], in file order.  Lines: CODE<TAB>NAME<TAB>WHERE;
    '#' starts a comment line.  Exits with the line at fault on anything else."""
    rows: list[tuple[int, str, str]] = []
    seen_codes: set[int] = set()
    seen_names: set[str] = set()
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        sys.exit(f"gen_wrappers: cannot read the CL error table {path}: {exc.strerror}")
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 3 or not re.fullmatch(r"0|-[1-9]\d*", cols[0]) or not re.fullmatch(r"CL_[A-Z0-9_]+", cols[1]):
            sys.exit(f"gen_wrappers: {path}:{n}: want CODE<TAB>CL_NAME<TAB>WHERE (code 0 or negative), got {line!r}")
        code, name = int(cols[0]), cols[1]
        if code in seen_codes or name in seen_names:
            sys.exit(f"gen_wrappers: {path}:{n}: {code} {name} is listed twice (one name per code)")
        seen_codes.add(code)
        seen_names.add(name)
        rows.append((code, name, cols[2].strip()))
    return rows


def header_error_codes(include_dir: str) -> dict[int, tuple[str, str]]:
    """Every error code the headers under include_dir/CL #define (raw text, so headers for other
    platforms count too): code -> (first name in FIRST_HEADERS-then-sorted order, header)."""
    cl_dir = os.path.join(include_dir, "CL")
    names = sorted(n for n in os.listdir(cl_dir) if n.endswith(".h") and n not in SKIP_HEADERS)
    out: dict[int, tuple[str, str]] = {}
    for h in [h for h in FIRST_HEADERS if h in names] + [h for h in names if h not in FIRST_HEADERS]:
        with open(os.path.join(cl_dir, h), encoding="utf-8", errors="replace") as f:
            text = f.read()
        for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+(CL_\w+)[ \t]+\(?[ \t]*-(\d+)[ \t]*\)?[ \t]*$", text, re.M):
            if m.group(1) not in NOT_ERROR_CODES:
                out.setdefault(-int(m.group(2)), (m.group(1), h))
    return out


def emit_codes(rows: list[tuple[int, str, str]], source: str) -> str:
    """generated/cl_codes.c: the error names, and CL_SUCCESS (code 0: the record of a silent fault,
    a skip or corrupt rule, names it; a fault rule's CODE must still be negative)."""
    out = [f"/* generated by gen_wrappers.py from {os.path.basename(source)} -- do not edit */",
           '#include "cl_codes.h"', "", "const soak_code_name soak_code_names[] = {"]
    out += [f'    {{{code}, "{name}"}},' for code, name, _ in rows if code <= 0]
    out += ["    {0, 0}", "};", ""]
    return "\n".join(out)


def parse(text: str) -> tuple[list[Api], list[tuple[str, int]]]:
    # keep only text from CL/ headers
    chunks: list[tuple[str, str]] = []
    current = ""
    values: list[tuple[str, int]] = []  # every CL_* name defined as a plain number, in header order
    for line in text.splitlines():
        m = re.match(r'#\s+\d+\s+"([^"]*)"', line)
        if m:
            current = m.group(1)
            continue
        in_cl = "/CL/" in current.replace("\\", "/")
        v = re.match(r"#define\s+(CL_\w+)\s+\(?\s*(0x[0-9A-Fa-f]+|\d+)[uUlL]*\s*\)?\s*$", line)
        if v and in_cl and os.path.basename(current) not in SKIP_HEADERS:
            values.append((v.group(1), int(v.group(2), 0)))
            continue
        if line.startswith("#"):
            continue
        if in_cl:
            chunks.append((os.path.basename(current), line))
    # statements
    body = "\n".join(line for _, line in chunks)
    statements = split_top(body, ";")
    typedefs: set[str] = set()
    for stmt in statements:
        s = " ".join(stmt.split())
        if not s.startswith("typedef"):
            continue
        name = typedef_name(s)
        if name:
            typedefs.add(name)
    apis: dict[str, Api] = {}
    header_of = {}
    for hdr, line in chunks:
        for n in re.findall(r"\b(cl[A-Z]\w*)\s*\(", line):
            header_of.setdefault(n, hdr)
    for stmt in statements:
        s = " ".join(strip_attributes(stmt).split())
        if not s.startswith("extern ") or "typedef" in s or "(" not in s:
            continue
        s = s[len("extern "):]
        m = re.match(r"(.*?)\b(cl[A-Z]\w*)\s*\((.*)\)\s*$", s)
        if not m:
            continue
        ret, name, plist = m.group(1).strip(), m.group(2), m.group(3).strip()
        if not ret or name in apis:
            continue
        params = [] if plist in ("", "void") else [Param(p, i, typedefs) for i, p in enumerate(split_top(plist, ","))]
        apis[name] = Api(name, " ".join(ret.split()), params, header_of.get(name, "?"))
    return sorted(apis.values(), key=lambda a: a.name), values


def info_param(api: Api) -> Param | None:
    """The param_name parameter of a clGet*Info entry point."""
    if not re.fullmatch(r"clGet\w*Info\w*", api.name):
        return None
    return next((p for p in api.params if p.name == "param_name"), None)


def info_prefix(name: str) -> tuple[str, tuple[str, ...]]:
    """clGetCommandBufferInfoKHR -> CL_COMMAND_BUFFER_ (extension entry points not in INFO_PREFIXES)."""
    if name in INFO_PREFIXES:
        return INFO_PREFIXES[name]
    m = re.fullmatch(r"clGet(\w+?)Info\w*", name)
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z][a-z0-9]*", m.group(1) if m else "")
    return "CL_" + "".join(w.upper() + "_" for w in words), ()


def param_table(api: Api, values: list[tuple[str, int]]) -> list[tuple[int, str]]:
    """(value, name) sorted by value for the names this entry point's param_name takes;
    the first name the headers define for a value wins (aliases come later)."""
    prefix, exclude = info_prefix(api.name)
    out: dict[int, str] = {}
    for name, value in values:
        if name.startswith(prefix) and not name.startswith(exclude) and 0 <= value < 2**32:
            out.setdefault(value, name)
    return sorted(out.items())


def transfer_bytes(api: Api) -> str:
    """C expression for the bytes an enqueue moves (0 when the headers' parameters don't say)."""
    names = {p.name: p for p in api.params}
    for size in ("size", "cb"):
        if size in names and names[size].ctype == "size_t":
            return f"(uint64_t){size}"
    if "Rect" in api.name and "Buffer" in api.name and "region" in names:
        return "(uint64_t)region[0] * region[1] * region[2]"
    return "0"


# commands --cl-profile can time on a twin queue (twin.c): kernels and the transfers whose result the
# engine reads through the call or a later command; a map/unmap (a pointer tied to its queue's
# order), a marker, a barrier or a migration stays on the engine's queue, counted untimed
TWIN_APIS = {"clEnqueueNDRangeKernel", "clEnqueueTask", "clEnqueueReadBuffer", "clEnqueueWriteBuffer",
             "clEnqueueReadBufferRect", "clEnqueueWriteBufferRect", "clEnqueueCopyBuffer", "clEnqueueCopyBufferRect",
             "clEnqueueFillBuffer", "clEnqueueReadImage", "clEnqueueWriteImage", "clEnqueueCopyImage",
             "clEnqueueFillImage", "clEnqueueCopyImageToBuffer", "clEnqueueCopyBufferToImage"}


def emit_wrapper(api: Api, idx: int, table: str | None = None) -> str:
    n = api.name
    ip = info_param(api) if table else None
    note = (f"    if (soak_code) soak_note_param(&soak_c, {table}, sizeof {table} / sizeof {table}[0], "
            f"(uint64_t){ip.name});") if ip else None
    args = ", ".join(p.name for p in api.params)
    hook_args = ", ".join(["&soak_c"] + [p.name for p in api.params])
    ec = api.errcode
    real_args = ", ".join(("&soak_err" if p is ec else p.name) for p in api.params)
    void = api.ret == "void"
    is_int = api.ret == "cl_int"
    ev = api.event_out
    # profiling: an enqueue the engine gave no event gets one of ours (profile.c releases it)
    prof = ev if (n.startswith("clEnqueue") and is_int and ev) else None
    fail_value = "" if void else (" soak_code" if is_int else f" ({api.ret})0")
    L = []
    L.append(f"/* {api.header} */")
    L.append(f"typedef {api.ret} (CL_API_CALL *soak_pfn_{n})({', '.join(p.decl for p in api.params) or 'void'});")
    L.append(f"SOAK_EXPORT {api.proto()}")
    L.append("{")
    L.append("    soak_call soak_c;")
    L.append(f"    soak_pfn_{n} soak_fn = (soak_pfn_{n})soak_real_fn({idx});")
    L.append(f"    if (!soak_enter(&soak_c, {idx})) {{")
    L.append("        if (soak_fn)")
    L.append(f"            {'' if void else 'return '}soak_fn({args});")
    if not void:
        if ec:
            L.append(f"        if ({ec.name}) *{ec.name} = CL_INVALID_OPERATION;")
        L.append(f"        return {'CL_INVALID_OPERATION' if is_int else f'({api.ret})0'};")
    else:
        L.append("        return;")
    L.append("    }")
    L.append("    cl_int soak_code = 0;")
    if ec:
        L.append("    cl_int soak_err = CL_SUCCESS;")
    L.append("    if (!soak_fn) {")
    L.append("        soak_code = soak_missing(&soak_c);")
    if ec:
        L.append(f"        if ({ec.name}) *{ec.name} = soak_code;")
    L.append(f"        soak_exit(&soak_c, soak_code);")
    L.append(f"        return{fail_value};")
    L.append("    }")
    names = {p.name: p for p in api.params}
    takes_kernel = "kernel" in names and names["kernel"].ctype == "cl_kernel"
    if not void:
        # entry points taking a cl_kernel: the kernel:GLOB trigger can see it
        L.append("    soak_code = soak_fault_k(&soak_c, kernel);" if takes_kernel else
                 "    soak_code = soak_fault(&soak_c);")
        L.append(f"#ifdef SOAK_PRE_{n}")
        L.append(f"    if (!soak_code) soak_code = SOAK_PRE_{n}({hook_args});")
        L.append("#endif")
        L.append("    if (soak_code) {")
        L.append(f"#ifdef SOAK_INJECTED_{n}")
        L.append(f"        SOAK_INJECTED_{n}({', '.join(['&soak_c', 'soak_code'] + [p.name for p in api.params])});")
        L.append("#endif")
        if ec:
            L.append(f"        if ({ec.name}) *{ec.name} = soak_code;")
        if note:
            L.append("    " + note)
        L.append("        soak_exit(&soak_c, soak_code);")
        L.append(f"        return{fail_value};")
        L.append("    }")
    if is_int:
        # a skip rule: CL_SUCCESS without calling the driver (the hook hands back any event asked for)
        L.append(f"#ifdef SOAK_SKIP_{n}")
        L.append("    if (SOAK_UNLIKELY(soak_c.flags & SOAK_CALL_SKIP)) {")
        L.append(f"        soak_code = SOAK_SKIP_{n}({hook_args});")
        L.append("        soak_exit(&soak_c, soak_code);")
        L.append("        return soak_code;")
        L.append("    }")
        L.append("#endif")
    if void:
        L.append(f"#ifdef SOAK_PRE_{n}")
        L.append(f"    (void)SOAK_PRE_{n}({hook_args});")
        L.append("#endif")
    launches = takes_kernel
    if prof:
        # each kernel name's (and other command's entry point's) first in a window and 1 in its rate of
        # the others are timed (an event each is what costs)
        twin = n in TWIN_APIS and "command_queue" in names and "num_events_in_wait_list" in names \
            and "event_wait_list" in names
        dims = ("work_dim", "global_work_size", "local_work_size")
        want = (f"soak_prof_kernel_want(&soak_c, kernel, {', '.join(d if d in names else '0' for d in dims)})"
                if launches else f"soak_prof_cmd_want(&soak_c, {1 if twin else 0})")
        L.append(f"    cl_event soak_own_ev = 0, *soak_app_ev = {prof.name};")
        L.append("    int soak_timed = 0;")
        if twin:
            L.append("    cl_command_queue soak_tq = 0;")
            L.append("    cl_event soak_tq_mark = 0, soak_tq_wait[SOAK_TWIN_WAIT_MAX + 1];")
        L.append("    if (SOAK_UNLIKELY(soak_g.profile)) {")
        L.append(f"        soak_timed = {want};")
        if twin:
            # timed on the queue's twin (twin.c), in the engine's order; 0: it cannot be timed
            L.append("        if (soak_timed && soak_twin_on) {")
            L.append("            cl_command_queue soak_t = soak_twin_enter(&soak_c, command_queue, "
                     "&num_events_in_wait_list, &event_wait_list, soak_tq_wait, &soak_tq_mark);")
            L.append("            if (!soak_t)")
            L.append("                soak_timed = soak_c.prof_timed = 0;")
            L.append("            else if (soak_t != command_queue)")
            L.append("                soak_tq = command_queue, command_queue = soak_t;")
            L.append("        }")
        L.append(f"        if (soak_timed && !{prof.name}) {prof.name} = &soak_own_ev;")
        L.append("    }")
    if void:
        L.append(f"    soak_fn({real_args});")
    else:
        L.append(f"    {api.ret} soak_r = soak_fn({real_args});")
    if ec:
        L.append("    soak_code = soak_err;")
        L.append(f"    if ({ec.name}) *{ec.name} = soak_err;")
    elif is_int:
        L.append("    soak_code = soak_r;")
    if prof and twin:
        L.append("    if (SOAK_UNLIKELY(soak_tq != 0)) { /* the engine's queue waits for the twin's command */")
        L.append(f"        soak_twin_leave(&soak_c, soak_tq, command_queue, soak_code == CL_SUCCESS ? *{prof.name} : 0, "
                 "soak_tq_mark);")
        L.append("        command_queue = soak_tq;")
        L.append("    }")
    post_args = ", ".join(["&soak_c"] + ([] if void else ["soak_r"]) + ["soak_code"]
                          + [("soak_app_ev" if prof and p is prof else p.name) for p in api.params])
    L.append(f"#ifdef SOAK_POST_{n}")
    L.append(f"    SOAK_POST_{n}({post_args});")
    L.append("#else")
    generic = []
    if api.ret in OBJECT_TYPES:
        generic.append(f"    if (soak_r) soak_obj_new(&soak_c, {OBJECT_TYPES[api.ret]}, soak_r, 0);")
    m = re.fullmatch(r"cl(Retain|Release)\w+", n)
    if m and len(api.params) == 1 and api.params[0].ctype in OBJECT_TYPES:
        fn = "soak_obj_retain" if m.group(1) == "Retain" else "soak_obj_release"
        generic.append(f"    if (soak_code == CL_SUCCESS) {fn}(&soak_c, {api.params[0].name});")
    if ev:
        evn = "soak_app_ev" if prof else ev.name
        generic.append(f"    if (soak_code == CL_SUCCESS && {evn} && *{evn}) "
                       f"soak_obj_new(&soak_c, SOAK_OBJ_EVENT, *{evn}, 0);")
    L.extend(generic or ["    (void)0;"])
    L.append("#endif")
    if prof:
        L.append("    if (SOAK_UNLIKELY(soak_g.profile) && soak_code == CL_SUCCESS) {")
        L.append(f"        cl_event soak_pe = soak_timed && {prof.name} ? *{prof.name} : 0;")
        if launches:
            L.append("        soak_prof_kernel_done(&soak_c, soak_pe, soak_app_ev == 0);")
        else:
            L.append(f"        soak_prof_enqueue(&soak_c, soak_pe, soak_app_ev == 0, {transfer_bytes(api)});")
        L.append("    }")
    if is_int:
        # a corrupt rule: once the call succeeded, perturb its destination in device memory
        L.append(f"#ifdef SOAK_CORRUPT_{n}")
        L.append("    if (SOAK_UNLIKELY(soak_c.flags & SOAK_CALL_CORRUPT) && soak_code == CL_SUCCESS)")
        L.append(f"        SOAK_CORRUPT_{n}({hook_args});")
        L.append("#endif")
    if note:
        L.append(note)
    L.append("    soak_exit(&soak_c, soak_code);")
    if not void:
        L.append("    return soak_r;")
    L.append("}")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", required=True, help="C compiler command line (quoted)")
    ap.add_argument("--include-dir", default="/usr/include")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--codes", default=CODES_FILE, help="the CL error name table (default: %(default)s)")
    a = ap.parse_args()
    cc = shlex.split(a.cc)
    headers, skipped = find_headers(cc, a.include_dir)
    apis, values = parse(preprocess(cc, a.include_dir, headers))
    codes = read_codes(a.codes)
    listed = {code for code, _, _ in codes}
    unnamed = sorted((c, n) for c, (n, _) in header_error_codes(a.include_dir).items() if c not in listed)
    if len(apis) < 40:
        sys.exit(f"gen_wrappers: only {len(apis)} entry points found in {a.include_dir}/CL; headers broken?")
    os.makedirs(a.out_dir, exist_ok=True)
    names = [api.name for api in apis]
    hdr = ["/* generated by gen_wrappers.py from " + ", ".join(headers) + " -- do not edit */",
           "#ifndef SOAK_CL_API_H", "#define SOAK_CL_API_H"]
    for d in DEFINES:
        name, _, value = d.partition("=")
        hdr += [f"#ifndef {name}", f"#define {name} {value}".rstrip(), "#endif"]
    hdr += [f"#include <CL/{h}>" for h in headers]
    hdr += [f"#define SOAK_N_API {len(apis)}"]
    hdr += [f"#define SOAK_ID_{n} {i}" for i, n in enumerate(names)]
    hdr += ["#endif", ""]
    out = ["/* generated by gen_wrappers.py -- do not edit", " * headers: " + ", ".join(headers)]
    out += [" * skipped: " + s for s in skipped]
    out += [" */", '#include "soak_interposer.h"', '#include "hooks.h"', "",
            "const char *const soak_api_names[SOAK_N_API] = {"]
    out += [f'    "{n}",' for n in names]
    out += ["};", ""]
    # bit 1: returns void (cannot fail), bit 2: has errcode_ret, bit 4: returns cl_int,
    # bit 8: takes a cl_kernel `kernel` (the kernel:GLOB trigger), bit 16: --cl-profile can time it on a
    # twin queue (TWIN_APIS)
    flags = [(1 if a.ret == "void" else 0) | (2 if a.errcode else 0) | (4 if a.ret == "cl_int" else 0)
             | (8 if any(p.name == "kernel" and p.ctype == "cl_kernel" for p in a.params) else 0)
             | (16 if a.name in TWIN_APIS else 0) for a in apis]
    out += ["const unsigned char soak_api_flags[SOAK_N_API] = {"]
    out += ["    " + ", ".join(str(f) for f in flags[i:i + 24]) + "," for i in range(0, len(flags), 24)]
    out += ["};", ""]
    # param_name -> CL_* name, per clGet*Info entry point (for the error records)
    n_params = 0
    tables: dict[str, str] = {}
    by_prefix: dict[tuple, str] = {}
    for api in apis:
        if api.name in HAND_WRITTEN or not info_param(api):
            continue
        pre = info_prefix(api.name)
        if pre not in by_prefix:
            rows = param_table(api, values)
            if not rows:
                continue
            by_prefix[pre] = f"soak_params_{api.name}"
            out.append(f"static const soak_param_name soak_params_{api.name}[] = {{")
            out += [f'    {{0x{v:x}u, "{nm}"}},' for v, nm in rows]
            out += ["};", ""]
            n_params += len(rows)
        tables[api.name] = by_prefix[pre]
    for i, api in enumerate(apis):
        if api.name in HAND_WRITTEN:
            continue
        out.append(emit_wrapper(api, i, tables.get(api.name)))
        out.append("")
    # sorted name -> wrapper table for clGetExtensionFunctionAddress(ForPlatform)
    out.append("const soak_wrapper_entry soak_wrappers[SOAK_N_API] = {")
    out += [f'    {{"{n}", {i}, (void *)&{n}}},' for i, n in enumerate(names)]
    out += ["};", ""]
    with open(os.path.join(a.out_dir, "cl_api.h"), "w") as f:
        f.write("\n".join(hdr))
    with open(os.path.join(a.out_dir, "cl_wrappers.c"), "w") as f:
        f.write("\n".join(out))
    with open(os.path.join(a.out_dir, "cl_codes.c"), "w") as f:
        f.write(emit_codes(codes, a.codes))
    with open(os.path.join(a.out_dir, "cl_api.txt"), "w") as f:
        f.write("".join(f"{api.name}\t{api.header}\t{api.ret}\n" for api in apis))
    print(f"gen_wrappers: {len(apis)} entry points from {', '.join(headers)}; {len(codes)} error codes; "
          f"{n_params} info param names for {len(tables)} clGet*Info entry points"
          + (f"; skipped {len(skipped)} header(s)" if skipped else ""))
    if unnamed:
        print(f"gen_wrappers: note: these headers define {len(unnamed)} error code(s) that {a.codes} does not "
              f"name (records say CL_UNKNOWN): " + ", ".join(f"{c} {n}" for c, n in unnamed))
    return 0


if __name__ == "__main__":
    sys.exit(main())

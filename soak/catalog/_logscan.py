"""Recognize MNN / driver log lines (formats from research §1.3 and §5).

Used for the text of crash and hang events (`last_lines`) and for runs that
have an engine.log but no events.jsonl (e.g. a raw `llm_demo` log).
"""

from __future__ import annotations

import re

CL_ERROR_RE = re.compile(r"CL ERROR CODE : (-?\d+), info:(.*?)\s*$")
OLD_CL_ERROR_RE = re.compile(r"(?<![A-Z] )\bERROR CODE : (-?\d+)")  # MNN 1.x, no "CL " prefix
FALLBACK_RE = re.compile(
    r"Can't Find type=3 backend, use \d+ instead"
    r"|type=3 backend don't Support Low Power, use \d+ instead"
    r"|OpenCL init error, fallback"
    r"|beyond cl_image creat size! fallback to cpu backend")

ERROR_LINE_RE = re.compile(
    r"Map error \w+ == nullptr|Map weightBufferCL error|clBuffer map error"
    r"|Alloc (?:Buffer|Image|mHostBuffer|mAHardWareBuffer|_allocHostBuffer) .*error"
    r"|Build program failed|Program build log|getKernel: \S+ error|Can't find kernel source"
    r"|OpenCL alloc .*failed|OpenCL mmap .*failed|OpenCL enqueue write error|SVM Alloc Failed"
    r"|\[Error\]|LLVM ERROR|CannotYetSelect|report_fatal_error|Segmentation fault|Aborted"
    r"|Parsing OpenCL symbols error|lws tune res|lws null res|setArg err|params tune error"
    r"|Cache invalid|Invalid Cache|Error tunning|Can't (?:load|build) .* load program|Can't load binary"
    r"|Prefix cache: map|Strassen out of memory|Pipeline|Resize error|Create execution error"
    r"|programName\.c_str\(\)|kernelName\.c_str\(\)|Unhandled Page fault|page fault|Fatal:"
    r"|is not permitted|onCopyBuffer .*error|module need new clone|exceeds max_position_embeddings"
    r"|not accessible for the namespace|GroupNorm \w+ map error|Conv buf low memory init error"
    r"|Invalid file size|MmapFile failed|map (?:buffer|Image) .*error|Error for recycle"
    r"|signal \d+ \(SIG\w+\)|Fatal signal|SIG(?:SEGV|ABRT|BUS|ILL|FPE)\b|Cannot access memory"
    r"|Load module failed|Failed to load tokenizer|not found: |Failed to open"
    r"|LLM init error|internal error",
    re.IGNORECASE)


def parse(line: str) -> dict | None:
    """One log line -> {'kind': 'cl_error', 'code', 'info'} | {'kind': 'cpu_fallback'}
    | {'kind': 'error_line'} | None."""
    m = CL_ERROR_RE.search(line)
    if m:
        return {"kind": "cl_error", "code": int(m.group(1)), "info": m.group(2)}
    m = OLD_CL_ERROR_RE.search(line)
    if m:
        return {"kind": "cl_error", "code": int(m.group(1)), "info": ""}
    if FALLBACK_RE.search(line):
        return {"kind": "cpu_fallback"}
    if ERROR_LINE_RE.search(line):
        return {"kind": "error_line"}
    return None


def first_cl_error(lines) -> tuple[int, str] | None:
    for line in lines or ():
        m = CL_ERROR_RE.search(line) or OLD_CL_ERROR_RE.search(line)
        if m:
            return int(m.group(1)), (m.group(2) if m.re is CL_ERROR_RE else "")
    return None


def first_error_lines(lines, n: int = 2) -> list[str]:
    out = []
    for line in lines or ():
        if not CL_ERROR_RE.search(line) and ERROR_LINE_RE.search(line):
            out.append(line)
            if len(out) >= n:
                break
    return out

"""Parse MNN's engine log lines into structured records: the one table of
MNN / driver log patterns soak knows.

Formats are MNN's exact printf strings (MNN's OpenCL backend and llm.cpp; see
https://github.com/alibaba/MNN/blob/master/source/backend/opencl/core/runtime/OpenCLWrapper.hpp
for `CL ERROR CODE : %d, info:%s`).  On Android the same text arrives through
logcat under the tag MNNJNI; strip the logcat prefix first (soak.targets.adb
and soak.catalog._rawlog do) and feed the message here.

Every pattern is named once, in PATTERNS; `parse_line` is used by the live
supervisor (engine.log as it is written), by the classifier (crash and hang
last lines, logs without events) and by raw-log triage.
"""

from __future__ import annotations

import re

from soak.cl_codes import code_name

CL_ERROR_RE = re.compile(r"CL ERROR CODE : (-?\d+), info:(.*?)\s*$")
OLD_CL_ERROR_RE = re.compile(r"(?<![A-Z] )\bERROR CODE : (-?\d+)")  # MNN 1.x, no "CL " prefix
_FALLBACK_TYPES_RE = re.compile(r"type=(\d+) backend(?:,| don't Support Low Power,) use (\d+) instead")
_CODE_RE = re.compile(r"(?:err|code|error):\s?(-?\d+)")

# (name, kind, regex, severity).  Kind cpu_fallback: OpenCL asked for, the CPU
# used.  Kind error_line: an MNN/driver error message.  Severity "info" lines
# are recognized (so they are not taken for unknown errors) but are no fault.
# Where two patterns match one line at the same place the earlier one wins:
# order from specific to general.
PATTERNS: list[tuple[str, str, str, str]] = [
    # Schedule.cpp:136 / :148: silent CPU fallback; OpenCLBackend.cpp:1380: no OpenCL
    # library could be dlopen'ed (the runtime creator returns null, Schedule then falls back)
    ("backend_fallback", "cpu_fallback", r"Can't Find type=\d+ backend, use \d+ instead", "error"),
    ("low_power_fallback", "cpu_fallback", r"type=\d+ backend don't Support Low Power, use \d+ instead", "error"),
    ("opencl_init_error", "cpu_fallback", r"OpenCL init error, fallback", "error"),
    ("opencl_symbols_error", "error_line", r"Parsing OpenCL symbols error", "error"),
    ("opencl_namespace", "error_line", r"not accessible for the namespace", "error"),
    ("op_cpu_fallback", "error_line", r"beyond cl_image creat size! fallback to cpu backend", "warning"),
    # weight upload / KV cache maps
    ("kv_map_error", "error_line", r"Map error (?:key|value)_ptr == nullptr", "error"),
    ("prefix_cache_map_error", "error_line", r"Prefix cache: map", "error"),
    ("map_error", "error_line",
     r"Map error \w+ == nullptr|Map weightBufferCL error|clBuffer map error|GroupNorm \w+ map error"
     r"|map (?:buffer|Image) .*error", "error"),
    # allocation
    ("alloc_buffer_error", "error_line", r"Alloc Buffer \d+ error, code:", "error"),
    ("alloc_image_error", "error_line", r"Alloc Image \d+ x \d+ error, code:", "error"),
    ("alloc_host_error", "error_line", r"Alloc (?:mHostBuffer|mAHardWareBuffer|_allocHostBuffer) .*error", "error"),
    ("opencl_alloc_failed", "error_line", r"OpenCL (?:alloc|mmap) .*failed", "error"),
    ("mmap_file_error", "error_line", r"MmapFile failed|Invalid file size", "error"),
    ("svm_alloc_failed", "error_line", r"SVM Alloc Failed", "error"),
    ("strassen_oom", "error_line", r"Strassen out of memory", "error"),
    ("conv_low_memory_init", "error_line", r"Conv buf low memory init error", "error"),
    ("copy_error", "error_line", r"onCopyBuffer .*error", "error"),
    ("enqueue_write_error", "error_line", r"OpenCL enqueue write error:", "error"),
    # kernel build and tuning
    ("build_program_failed", "error_line", r"Build program failed, err:", "error"),
    ("program_build_log", "error_line", r"Program build log:", "error"),
    ("kernel_source_missing", "error_line", r"Can't find kernel source", "error"),
    ("kernel_build_trace", "error_line", r"programName\.c_str\(\)=s |kernelName\.c_str\(\)", "error"),
    ("get_kernel_error", "error_line", r"getKernel: \S+ error", "error"),
    ("lws_tune_error", "error_line", r"lws tune res|[23]D lws null res|lws null res", "error"),
    ("gemm_tune_error", "error_line", r"params tune error", "error"),
    ("setarg_error", "error_line", r"setArg err -?\d+", "error"),
    ("llvm_error", "error_line", r"LLVM ERROR:|CannotYetSelect|report_fatal_error", "error"),
    # llm.cpp
    ("error_state", "error_line", r"\[Error\]: LLM in error state", "error"),
    ("no_outputs", "error_line", r"\[Error\]: onForward returned no outputs", "error"),
    ("invalid_output_tensor", "error_line", r"\[Error\]: invalid output tensor", "error"),
    ("load_failed", "error_line", r"\[Error\]: Load module failed|\[Error\]: Failed to load tokenizer|LLM init error", "error"),
    ("file_not_found", "error_line", r"\[Error\]: .* not found: |\[Error\]: Failed to open ", "error"),
    ("empty_input", "error_line", r"\[Error\]: empty input_ids", "error"),
    ("llm_error", "error_line", r"\[Error\]", "error"),
    ("pipeline_error", "error_line",
     r"Pipeline(?: Resize error|: execution invalid|: _allocTensor failed)|Resize error for type|Create execution error",
     "error"),
    # driver faults as they appear in a log (logcat, dmesg)
    ("driver_library_missing", "error_line", r"Failed to open libCB", "error"),
    ("gpu_page_fault", "error_line", r"(?i:unhandled page fault|gpu page fault)", "error"),
    ("config_not_permitted", "error_line", r"is not permitted, please check cl_mode", "error"),
    # cache and housekeeping
    ("recycle_error", "error_line", r"Error for recycle|recycle failed", "warning"),
    ("cache_invalid", "error_line", r"Cache invalid, will be reset|Invalid Cache|Error tunning", "warning"),
    ("cache_program_rejected", "error_line", r"Can't (?:load|build) \S+ - \S+ load program|Can't load binary", "warning"),
    ("cache_write_error", "error_line", r"Write Cache File error", "warning"),
    ("context_overflow", "error_line", r"sequence length \d+ exceeds max_position_embeddings", "warning"),
    ("module_clone", "error_line", r"module need new clone", "warning"),
    ("cache_missing", "error_line", r"Load Cache file error\.|Can't open file:.*mnn_cachefile", "info"),
    # a crash as a shell or logcat shows it: recognized, but the crash record (kind crash,
    # from the worker's exit or soak.catalog._rawlog) is the fault, not this line
    ("fatal_signal", "error_line",
     r"Fatal signal \d+|signal \d+ \(SIG\w+\)|Segmentation fault|Aborted \(core dumped\)|\bSIG(?:SEGV|ABRT|BUS|ILL|FPE)\b",
     "info"),
]

_BY_NAME = {name: (kind, severity) for name, kind, _rx, severity in PATTERNS}
_ALL_RE = re.compile("|".join(f"(?P<{name}>{rx})" for name, _kind, rx, _sev in PATTERNS))
PATTERN_NAMES = tuple(_BY_NAME)


def parse_line(text: str) -> dict | None:
    """Classify one engine log line.  None for ordinary output.

    {'kind': 'cl_error', 'code', 'name', 'info', 'line'}
    {'kind': 'cpu_fallback', 'pattern', 'severity', 'requested_type', 'used_type', 'line'}
    {'kind': 'error_line', 'pattern', 'severity', 'line'[, 'code']}
    """
    m = CL_ERROR_RE.search(text)
    if m is None and "ERROR CODE" in text:
        m = OLD_CL_ERROR_RE.search(text)
    if m is not None:
        code = int(m.group(1))
        info = m.group(2).strip() if m.re is CL_ERROR_RE else ""
        return {"kind": "cl_error", "code": code, "name": code_name(code), "info": info, "line": text.rstrip()}
    m = _ALL_RE.search(text)
    if m is None:
        return None
    name = m.lastgroup
    kind, severity = _BY_NAME[name]
    rec = {"kind": kind, "pattern": name, "severity": severity, "line": text.rstrip()}
    if kind == "cpu_fallback":
        t = _FALLBACK_TYPES_RE.search(text)
        rec["requested_type"] = int(t.group(1)) if t else 3
        rec["used_type"] = int(t.group(2)) if t else None
        if name == "low_power_fallback":
            rec["reason"] = "low_power"
        elif name == "opencl_init_error":
            rec["reason"] = "no_opencl_library"
    else:
        code = _CODE_RE.search(text)
        if code and name in ("alloc_buffer_error", "alloc_image_error", "alloc_host_error", "build_program_failed",
                             "map_error", "enqueue_write_error", "get_kernel_error", "setarg_error"):
            rec["code"] = int(code.group(1))
    return rec


def is_fault(rec: dict | None) -> bool:
    return rec is not None and rec.get("severity") != "info"


def first_cl_error(lines) -> tuple[int, str] | None:
    for line in lines or ():
        rec = parse_line(line)
        if rec is not None and rec["kind"] == "cl_error":
            return rec["code"], rec["info"]
    return None


def first_error_lines(lines, n: int = 2) -> list[str]:
    """The first n lines that are errors, but not CL ERROR CODE lines."""
    out = []
    for line in lines or ():
        rec = parse_line(line)
        if is_fault(rec) and rec["kind"] == "error_line":
            out.append(line)
            if len(out) >= n:
                break
    return out

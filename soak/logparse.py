"""Parse MNN's engine log lines into structured records.

Formats are MNN's exact printf strings (research notes §1.3).  On Android the
same text arrives through logcat under the tag MNNJNI; strip the logcat
prefix first (soak.targets.adb does) and feed the message here.
"""

from __future__ import annotations

import re

from soak.cl_codes import code_name

CL_ERROR_RE = re.compile(r"CL ERROR CODE : (-?\d+), info:(.*?)\s*$")
FALLBACK_RE = re.compile(r"Can't Find type=(\d+) backend, use (\d+) instead")
LOW_POWER_FALLBACK_RE = re.compile(r"type=(\d+) backend don't Support Low Power, use (\d+) instead")
BUILD_FAILED_RE = re.compile(r"Build program failed, err:(-?\d+)")
ALLOC_CODE_RE = re.compile(r"Alloc (?:Buffer|Image) .*?code:(-?\d+)")

# (pattern name, regex, severity).  First match wins; order from specific to general.
ERROR_PATTERNS: list[tuple[str, re.Pattern, str]] = [
    (name, re.compile(rx), sev)
    for name, rx, sev in [
        ("kv_map_error", r"Map error (?:key|value)_ptr == nullptr", "error"),
        ("map_error", r"Map error \w+ == nullptr|map error|Map weightBufferCL error|clBuffer map error", "error"),
        ("alloc_buffer_error", r"Alloc Buffer \d+ error, code:", "error"),
        ("alloc_image_error", r"Alloc Image \d+ x \d+ error, code:", "error"),
        ("opencl_alloc_failed", r"OpenCL (?:alloc|mmap) .*failed", "error"),
        ("build_program_failed", r"Build program failed, err:", "error"),
        ("program_build_log", r"Program build log:", "error"),
        ("kernel_build_trace", r"programName\.c_str\(\)=s ", "error"),
        ("get_kernel_error", r"getKernel: .* error, res:", "error"),
        ("lws_tune_error", r"(?:lws tune res|[23]D lws null res) ", "error"),
        ("setarg_error", r"setArg err -?\d+", "error"),
        ("enqueue_write_error", r"OpenCL enqueue write error:", "error"),
        ("svm_alloc_failed", r"SVM Alloc Failed", "error"),
        ("opencl_init_error", r"OpenCL init error, fallback", "error"),
        ("opencl_symbols_error", r"Parsing OpenCL symbols error", "error"),
        ("llvm_error", r"LLVM ERROR:", "error"),
        ("error_state", r"\[Error\]: LLM in error state", "error"),
        ("no_outputs", r"\[Error\]: onForward returned no outputs", "error"),
        ("invalid_output_tensor", r"\[Error\]: invalid output tensor", "error"),
        ("load_failed", r"\[Error\]: Load module failed|\[Error\]: Failed to load tokenizer", "error"),
        ("file_not_found", r"\[Error\]: .* not found: |\[Error\]: Failed to open ", "error"),
        ("empty_input", r"\[Error\]: empty input_ids", "error"),
        ("pipeline_error", r"Pipeline(?: Resize error|: execution invalid|: _allocTensor failed)|Resize error for type|Create execution error", "error"),
        ("strassen_oom", r"Strassen out of memory", "error"),
        ("recycle_error", r"Error for recycle|recycle failed", "warning"),
        ("cache_invalid", r"Cache invalid, will be reset|Invalid Cache|Error tunning", "warning"),
        ("cache_write_error", r"Write Cache File error", "warning"),
        ("context_overflow", r"sequence length \d+ exceeds max_position_embeddings", "warning"),
        ("module_clone", r"module need new clone", "warning"),
        ("gpu_mode_invalid", r"is not permitted, please check cl_mode", "error"),
        ("cache_missing", r"Load Cache file error\.|Can't open file:.*mnn_cachefile", "info"),
    ]
]


def parse_line(text: str) -> dict | None:
    """Classify one engine log line.  None for ordinary output."""
    m = CL_ERROR_RE.search(text)
    if m:
        code = int(m.group(1))
        return {"kind": "cl_error", "code": code, "name": code_name(code), "info": m.group(2).strip(),
                "line": text.rstrip()}
    m = FALLBACK_RE.search(text)
    if m:
        return {"kind": "cpu_fallback", "requested_type": int(m.group(1)), "used_type": int(m.group(2)),
                "line": text.rstrip()}
    m = LOW_POWER_FALLBACK_RE.search(text)
    if m:
        return {"kind": "cpu_fallback", "requested_type": int(m.group(1)), "used_type": int(m.group(2)),
                "line": text.rstrip(), "reason": "low_power"}
    for name, rx, severity in ERROR_PATTERNS:
        if rx.search(text):
            rec = {"kind": "error_line", "pattern": name, "severity": severity, "line": text.rstrip()}
            code = BUILD_FAILED_RE.search(text) or ALLOC_CODE_RE.search(text)
            if code:
                rec["code"] = int(code.group(1))
            return rec
    return None

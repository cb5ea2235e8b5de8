"""Memory of the runner on the device, in one shell call per sample.

Sources: /proc/<pid>/status (VmRSS, Threads), /proc/<pid>/smaps_rollup
(Pss, private = USS, SwapPss), the fd count, `dumpsys meminfo <pid>`
(TOTAL PSS/RSS, Graphics, GL/EGL mtrack) and GPU memory where the driver
exposes it: Adreno KGSL per-process files, Mali `gpu_memory`.
"""

from __future__ import annotations

import re

from soak.targets.adb._conn import AdbLink, DeviceGone

SEP = "----soak----"
KGSL_PROC = "/sys/class/kgsl/kgsl/proc"
MALI_FILES = ("/sys/kernel/debug/mali0/gpu_memory", "/proc/mali/gpu_memory")


def _command(pid: int, with_dumpsys: bool) -> str:
    parts = [
        f"cat /proc/{pid}/status",
        f"cat /proc/{pid}/smaps_rollup 2>/dev/null",
        f"ls /proc/{pid}/fd 2>/dev/null | wc -l",
        f"dumpsys meminfo {pid} 2>/dev/null" if with_dumpsys else "true",
        # KGSL: one "name value" line per per-process file (gpumem_mapped, gpumem_unmapped, imported_mem, ...)
        f"for f in {KGSL_PROC}/{pid}/*; do [ -f \"$f\" ] && echo \"${{f##*/}} $(cat \"$f\" 2>/dev/null)\"; done 2>/dev/null",
        "cat " + " ".join(MALI_FILES) + " 2>/dev/null",
    ]
    return f"; echo {SEP}; ".join(parts)


def _kb(text: str, key: str) -> int | None:
    m = re.search(rf"^{re.escape(key)}:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def parse_meminfo(text: str) -> dict:
    """The fields of `dumpsys meminfo <pid>` that matter for a native LLM runner (bytes)."""
    out: dict = {}
    m = re.search(r"TOTAL PSS:\s+(\d+)", text)
    if m:
        out["total_pss"] = int(m.group(1)) * 1024
    m = re.search(r"TOTAL RSS:\s+(\d+)", text)
    if m:
        out["total_rss"] = int(m.group(1)) * 1024
    m = re.search(r"TOTAL SWAP PSS:\s+(\d+)", text)
    if m:
        out["total_swap_pss"] = int(m.group(1)) * 1024
    for label, key in (("Graphics:", "graphics"), ("Native Heap:", "native_heap")):
        m = re.search(rf"^\s*{re.escape(label)}\s+(\d+)", text, re.M)
        if m:
            out[key] = int(m.group(1)) * 1024
    for label, key in (("GL mtrack", "gl_mtrack"), ("EGL mtrack", "egl_mtrack")):
        m = re.search(rf"^\s*{label}\s+(\d+)", text, re.M)
        if m:
            out[key] = int(m.group(1)) * 1024
    return out


def parse_kgsl(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_mali(text: str, pid: int) -> int | None:
    """Pages of pid in Mali's gpu_memory table ("  kctx-0x...  <pages>  <pid> ...")."""
    total = None
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[0].startswith("kctx") and str(pid) in cols[1:]:
            try:
                total = (total or 0) + int(cols[1]) * 4096
            except ValueError:
                continue
    return total


def sample(link: AdbLink, pid: int, with_dumpsys: bool = True, timeout: float = 8.0) -> dict | None:
    """rss/uss/pss/swap (bytes), fds, threads, gpu_bytes, meminfo; None if the process is gone."""
    try:
        res = link.shell(_command(pid, with_dumpsys), timeout)
    except DeviceGone:
        return None
    parts = res.text.split(SEP)
    parts += [""] * (6 - len(parts))
    status, rollup, fds, meminfo, kgsl, mali = parts[:6]
    if "VmRSS" not in status and "Name:" not in status:
        return None
    m = re.search(r"^Threads:\s+(\d+)", status, re.M)
    private = [v for v in (_kb(rollup, "Private_Clean"), _kb(rollup, "Private_Dirty")) if v is not None]
    out = {
        "rss": _kb(status, "VmRSS") or _kb(rollup, "Rss"),
        "uss": sum(private) if private else None,
        "pss": _kb(rollup, "Pss"),
        "swap": _kb(rollup, "SwapPss") or _kb(status, "VmSwap"),
        "fds": int(fds.strip()) if fds.strip().isdigit() else None,
        "threads": int(m.group(1)) if m else None,
    }
    info = parse_meminfo(meminfo)
    if info:
        out["meminfo"] = info
    kgsl_files = parse_kgsl(kgsl)
    gpu = None
    if kgsl_files:
        out["kgsl"] = kgsl_files
        gpu = sum(v for k, v in kgsl_files.items() if k.startswith("gpumem") or k == "imported_mem")
    mali_bytes = parse_mali(mali, pid)
    if mali_bytes is not None:
        gpu = (gpu or 0) + mali_bytes
    if gpu is None and info.get("graphics") is not None:
        gpu = info["graphics"]
    out["gpu_bytes"] = gpu
    return out

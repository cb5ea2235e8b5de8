"""What a device is: getprop, GPU and driver, ABI, boot id.  One shell call
for the cheap facts, one for SurfaceFlinger."""

from __future__ import annotations

import re

from soak.targets.adb._conn import AdbLink, DeviceGone

SEP = "----soak----"
PROP_LINE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")
ABI_MACHINES = {"arm64-v8a": "aarch64", "armeabi-v7a": "arm", "armeabi": "arm", "x86_64": "x86_64", "x86": "x86",
                "riscv64": "riscv64"}


def parse_getprop(text: str) -> dict[str, str]:
    props = {}
    for line in text.splitlines():
        m = PROP_LINE.match(line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def parse_gles(text: str) -> dict | None:
    """`GLES: Qualcomm, Adreno (TM) 740, OpenGL ES 3.2 V@0676.32 (GIT@...)` -> vendor/renderer/version."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("GLES:"):
            parts = [p.strip() for p in line[5:].split(",", 2)]
            parts += [""] * (3 - len(parts))
            driver = re.search(r"V@([\w.]+)", parts[2])
            return {"vendor": parts[0], "renderer": parts[1], "version": parts[2],
                    "driver": driver.group(1) if driver else None}
    return None


def boot_state(link: AdbLink, timeout: float = 10.0) -> tuple[str | None, float | None]:
    """(boot id, uptime seconds) of the device."""
    res = link.shell("cat /proc/sys/kernel/random/boot_id; cat /proc/uptime", timeout)
    lines = res.text.split()
    boot_id = lines[0] if lines else None
    try:
        uptime = float(lines[1]) if len(lines) > 1 else None
    except ValueError:
        uptime = None
    return boot_id, uptime


def describe(link: AdbLink, timeout: float = 20.0) -> dict:
    """Device facts for the manifest and `soak devices`."""
    res = link.shell(f"getprop; echo {SEP}; cat /proc/sys/kernel/random/boot_id; echo {SEP}; cat /proc/uptime; "
                     f"echo {SEP}; uname -r; echo {SEP}; grep MemTotal /proc/meminfo", timeout)
    parts = res.text.split(SEP)
    parts += [""] * (5 - len(parts))
    props = parse_getprop(parts[0])
    gles = None
    try:
        gles = parse_gles(link.shell("dumpsys SurfaceFlinger | grep -m 1 GLES", timeout).text)
    except DeviceGone:
        pass
    mem = re.search(r"(\d+)\s*kB", parts[4])
    uptime = parts[2].split()
    abi = props.get("ro.product.cpu.abi") or None
    return {
        "kind": "adb",
        "serial": link.serial,
        "adb_server": f"{link.server[0]}:{link.server[1]}",
        "manufacturer": props.get("ro.product.manufacturer"),
        "model": props.get("ro.product.model"),
        "device": props.get("ro.product.device"),
        "soc_manufacturer": props.get("ro.soc.manufacturer"),
        "soc": props.get("ro.soc.model") or props.get("ro.hardware.chipname") or props.get("ro.hardware"),
        "board_platform": props.get("ro.board.platform"),
        "android_version": props.get("ro.build.version.release"),
        "sdk": props.get("ro.build.version.sdk"),
        "fingerprint": props.get("ro.build.fingerprint"),
        "abi": abi,
        "abi_list": (props.get("ro.product.cpu.abilist") or abi or "").split(",") if (abi or props.get(
            "ro.product.cpu.abilist")) else [],
        "machine": ABI_MACHINES.get(abi or "", abi),
        "gpu": gles,
        "kernel": parts[3].strip() or None,
        "memory_bytes": int(mem.group(1)) * 1024 if mem else None,
        "boot_id": parts[1].strip() or None,
        "uptime_s": float(uptime[0]) if uptime else None,
    }

"""Thermal state and GPU clock of a device, where readable, so a slowdown can
be tied to throttling.  Sources: /sys/class/thermal zones, `dumpsys
thermalservice` (Android's throttling status 0-6), KGSL gpuclk (Adreno)."""

from __future__ import annotations

import re

from soak.targets.adb._conn import AdbLink, DeviceGone

SEP = "----soak----"
KGSL = "/sys/class/kgsl/kgsl-3d0"
STATUS_NAMES = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}

COMMAND = (
    "for z in /sys/class/thermal/thermal_zone*; do "
    "[ -r \"$z/temp\" ] && echo \"$(cat \"$z/type\" 2>/dev/null) $(cat \"$z/temp\" 2>/dev/null)\"; done 2>/dev/null; "
    f"echo {SEP}; dumpsys thermalservice 2>/dev/null | head -40; "
    f"echo {SEP}; cat {KGSL}/gpuclk 2>/dev/null; echo {SEP}; cat {KGSL}/max_gpuclk 2>/dev/null; "
    f"echo {SEP}; cat {KGSL}/gpu_busy_percentage 2>/dev/null"
)


def parse_zones(text: str) -> dict[str, float]:
    """"cpu-0-0 41500" lines -> {"cpu-0-0": 41.5} (millidegrees or degrees)."""
    zones: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            continue
        try:
            value = float(parts[1])
        except ValueError:
            continue
        zones[parts[0]] = value / 1000 if abs(value) >= 200 else value
    return zones


def parse_thermalservice(text: str) -> dict:
    out: dict = {}
    m = re.search(r"Thermal Status:\s*(\d+)", text)
    if m:
        out["status"] = int(m.group(1))
        out["status_name"] = STATUS_NAMES.get(out["status"])
    temps = {}
    for m in re.finditer(r"Temperature\{mValue=([-\d.]+), mType=(-?\d+), mName=([^,]+), mStatus=(\d+)", text):
        temps[m.group(3)] = float(m.group(1))
    if temps:
        out["temperatures"] = temps
    return out


def _int(text: str) -> int | None:
    text = text.strip().split()[0] if text.strip() else ""
    return int(text) if text.isdigit() else None


def sample(link: AdbLink, timeout: float = 8.0) -> dict | None:
    try:
        res = link.shell(COMMAND, timeout)
    except DeviceGone:
        return None
    parts = res.text.split(SEP)
    parts += [""] * (5 - len(parts))
    out: dict = {}
    zones = parse_zones(parts[0])
    if zones:
        out["zones_c"] = zones
        out["max_c"] = max(zones.values())
    out.update(parse_thermalservice(parts[1]))
    clk, max_clk, busy = _int(parts[2]), _int(parts[3]), _int(parts[4])
    if clk is not None:
        out["gpu_clock_hz"] = clk
    if max_clk is not None:
        out["gpu_max_clock_hz"] = max_clk
    if busy is not None:
        out["gpu_busy_percent"] = busy
    return out

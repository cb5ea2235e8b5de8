"""Target strings and the adb server's device list.

    adb | adb:SERIAL | adb@HOST:PORT | adb:SERIAL@HOST:PORT, then options
    ,runner=PATH ,root=DIR ,libs=DIR[:DIR] ,wait=SECONDS
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from soak import errors
from soak.targets.adb._conn import AdbLink, DeviceGone, server_address

SPEC = re.compile(r"^adb(?::(?P<serial>[^@,]+))?(?:@(?P<server>[^,]+))?(?P<opts>(?:,[a-z_]+=[^,]*)*)$")


@dataclass
class TargetSpec:
    serial: str | None = None
    server: tuple[str, int] | None = None
    runner: str | None = None
    root: str | None = None
    wait_s: float | None = None
    libs: list[str] | None = None


def parse_spec(text: str) -> TargetSpec:
    m = SPEC.match(text.strip())
    if not m:
        raise errors.BadInput(f"bad target {text!r}",
                              "use adb, adb:SERIAL, adb@HOST:PORT or adb:SERIAL@HOST:PORT "
                              "(options: ,runner=PATH ,root=DIR ,wait=SECONDS)")
    spec = TargetSpec(serial=m.group("serial") or None)
    if m.group("server"):
        spec.server = server_address(m.group("server"))
    for opt in filter(None, m.group("opts").split(",")):
        key, _, value = opt.partition("=")
        if key == "runner":
            spec.runner = value
        elif key == "root":
            spec.root = value.rstrip("/")
        elif key == "libs":
            spec.libs = [d for d in value.split(":") if d]
        elif key == "wait":
            try:
                spec.wait_s = float(value)
            except ValueError:
                raise errors.BadInput(f"bad wait= in target {text!r}: {value!r}", "give seconds, e.g. wait=300") from None
        else:
            raise errors.BadInput(f"unknown target option {key!r} in {text!r}", "use runner=, root=, libs= or wait=")
    return spec


def list_devices(server: tuple[str, int] | None = None) -> list[dict]:
    """[{serial, state, tags...}] of the adb server; DeviceUnavailable if it can't be reached."""
    link = AdbLink("-", server)
    try:
        text = link.host_query("host:devices-l")
    except DeviceGone as exc:
        raise errors.DeviceUnavailable(
            f"cannot reach the adb server at {link.server[0]}:{link.server[1]}: {exc}",
            "start it with `adb start-server`, or point ADB_SERVER_SOCKET=tcp:HOST:PORT at a remote one") from None
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            tags = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
            out.append({"serial": parts[0], "state": parts[1], **tags})
    return out


STATE_HINTS = {
    "unauthorized": "unlock the phone and accept the USB debugging prompt",
    "offline": "replug the cable, or run `adb reconnect`",
    "no permissions": "fix udev rules for the phone (see `adb devices` output)",
    "recovery": "the device is in recovery: boot it normally",
    "bootloader": "the device is in the bootloader: boot it normally",
}

"""soak devices: the Android devices adb sees, with what soak needs to know."""

from __future__ import annotations

import argparse
import json

from soak import errors

DESCRIPTION = """List the devices of the adb server with probe information.

  soak devices                    all devices
  soak devices R58M12345          one device (exit 9 if it is not connected)
  soak devices --server farm:5037 a remote adb server (also ADB_SERVER_SOCKET=tcp:HOST:PORT)
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("serial", nargs="*", help="only these serials (each must be connected)")
    p.add_argument("--server", metavar="HOST:PORT", help="adb server (default: $ADB_SERVER_SOCKET or 127.0.0.1:5037)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-probe", action="store_true", help="only serial and state (no shell calls)")


def run(args: argparse.Namespace) -> int:
    from soak.targets.adb import AdbLink, DeviceGone, probe, server_address
    from soak.targets.adb.target import STATE_HINTS, list_devices

    server = server_address(args.server) if args.server else server_address()
    listed = list_devices(server)
    if args.serial:
        by_serial = {d["serial"]: d for d in listed}
        missing = [s for s in args.serial if s not in by_serial]
        if missing:
            known = ", ".join(by_serial) or "none"
            raise errors.DeviceUnavailable(
                f"device {', '.join(missing)} is not connected (adb server {server[0]}:{server[1]} lists: {known})",
                "plug it in and check `adb devices`; for a network device run `adb connect HOST:PORT`")
        listed = [by_serial[s] for s in args.serial]
    rows = []
    for dev in listed:
        row = dict(dev)
        if dev["state"] == "device" and not args.no_probe:
            try:
                row.update(probe.describe(AdbLink(dev["serial"], server)))
            except DeviceGone as exc:
                row["error"] = str(exc)
        elif dev["state"] != "device":
            row["hint"] = STATE_HINTS.get(dev["state"], "check `adb devices`")
        rows.append(row)
    if args.serial:
        bad = [r for r in rows if r["state"] != "device" or r.get("error")]
        if bad:
            r = bad[0]
            raise errors.DeviceUnavailable(f"device {r['serial']} is {r.get('error') or r['state']}",
                                           r.get("hint") or "check `adb devices`; replug the phone")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no devices on the adb server at {server[0]}:{server[1]}")
        return 0
    for r in rows:
        if r["state"] != "device":
            print(f"{r['serial']}  {r['state']}  ({r.get('hint')})")
            continue
        gpu = r.get("gpu") or {}
        print(f"{r['serial']}  {r.get('manufacturer') or ''} {r.get('model') or ''}  "
              f"SoC {r.get('soc') or '?'} ({r.get('board_platform') or '?'})  Android {r.get('android_version') or '?'}"
              f"  ABI {r.get('abi') or '?'}  GPU {gpu.get('renderer') or '?'}"
              + (f" driver {gpu['driver']}" if gpu.get("driver") else ""))
    return 0

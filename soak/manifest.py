"""manifest.json: what ran, where, with what, from which seed."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import socket
import sys
from pathlib import Path

from soak import __version__, run_folder


def sha256_file(path: str | Path, limit: int | None = None) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def library_hashes(paths: list[str]) -> dict[str, str | None]:
    return {str(p): sha256_file(p) for p in paths if p}


def versions() -> dict:
    out = {"soak": __version__, "python": platform.python_version()}
    for name in ("hypothesis", "psutil", "adbutils", "MNN"):
        try:
            from importlib.metadata import version

            out[name.lower()] = version(name if name != "MNN" else "mnn")
        except Exception:  # not installed
            continue
    return out


NETWORK_SERIAL = re.compile(r"^\[?[\w.:-]+\]?:\d+$")  # `adb connect HOST:PORT` names the device so


def device_record(host: dict) -> dict | None:
    """The phone a run used, from an adb target's description: which adb server (host:port)
    and serial reach it, how it is connected, what it is, and the machine soak ran on.
    None for a local run (the machine is `host`)."""
    if host.get("kind") != "adb":
        return None
    gpu = host.get("gpu") if isinstance(host.get("gpu"), dict) else {}
    serial = str(host.get("serial") or "")
    return {
        "kind": "adb",
        "adb_server": host.get("adb_server"),
        "serial": host.get("serial"),
        "connection": "network" if NETWORK_SERIAL.match(serial) else "usb",
        "model": host.get("model"),
        "manufacturer": host.get("manufacturer"),
        "soc": host.get("soc"),
        "gpu": gpu.get("renderer"),
        "gpu_driver": gpu.get("driver"),
        "android_version": host.get("android_version"),
        "fingerprint": host.get("fingerprint"),
        "runner_host": socket.gethostname(),
    }


def base_manifest(argv: list[str], config: dict, host: dict) -> dict:
    return {
        "schema": run_folder.SCHEMA,
        "command": ["soak", *argv],
        "cwd": os.getcwd(),
        "argv0": sys.argv[0],
        "config": config,
        "seed": config.get("seed"),
        "versions": versions(),
        "host": host,
        "os": host.get("os", "linux"),
        "device": device_record(host),
    }

"""adb calls that cannot hang: every one has its own deadline.

adbutils' `shell(timeout=)` only times reads after the device said OKAY, and
`open_transport()` waits up to 600 s, so a frozen phone blocks forever (see
the research note on adb test devices).  Here every socket to the adb server
gets a timeout before the first byte, the transport switch included.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable

from soak.errors import BadInput, DeviceUnavailable

try:  # the [adb] extra: only adb targets need it (it brings Pillow, requests and an adb binary)
    import adbutils
    from adbutils.errors import AdbError
except ImportError:
    raise BadInput("adb targets need the adbutils package, which is not installed",
                   "pip install 'soak[adb]'") from None

#: shell v2 packet ids (adb/shell_protocol.h)
STDIN, STDOUT, STDERR, EXIT, CLOSE_STDIN = 0, 1, 2, 3, 4

CONNECT_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 30.0


class DeviceGone(Exception):
    """The device did not answer in time, or the transport broke."""


@dataclass
class ShellResult:
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")


def server_address(spec: str | None = None) -> tuple[str, int]:
    """The adb server to use: "host:port", else $ADB_SERVER_SOCKET
    (tcp:host:port, as adb itself reads it), else ANDROID_ADB_SERVER_HOST/PORT."""
    text = spec or os.environ.get("ADB_SERVER_SOCKET", "")
    if text:
        if text.startswith("tcp:"):
            text = text[4:]
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise DeviceUnavailable(f"bad adb server address {text!r}",
                                    "use host:port, e.g. adb@farm.example:5037 or ADB_SERVER_SOCKET=tcp:farm:5037")
        return host, int(port)
    return (os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1"),
            int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037")))


class AdbLink:
    """One device on one adb server, reached only through timed calls."""

    def __init__(self, serial: str, server: tuple[str, int] | None = None):
        self.serial = serial
        self.server = server or server_address()
        self.client = adbutils.AdbClient(host=self.server[0], port=self.server[1])

    # ---- the adb server ----
    def _server_conn(self, timeout: float) -> adbutils.AdbConnection:
        # adbutils starts an adb server (its own binary) when none answers, and leaves it running:
        # soak never starts one, it only connects to the server the user runs
        try:
            socket.create_connection(self.server, timeout=timeout).close()
        except OSError as exc:
            raise DeviceGone(f"adb server {self.server[0]}:{self.server[1]} not reachable: {exc} "
                             f"(soak does not start one)") from None
        try:
            c = self.client.make_connection(timeout=timeout)
        except (AdbError, OSError) as exc:
            raise DeviceGone(f"adb server {self.server[0]}:{self.server[1]} not reachable: {exc}") from None
        c.conn.settimeout(timeout)
        return c

    def host_query(self, command: str, timeout: float = CONNECT_TIMEOUT_S) -> str:
        """A host service answering one string (host:devices-l, host-serial:S:get-state)."""
        c = self._server_conn(timeout)
        try:
            c.send_command(command)
            c.check_okay()
            return c.read_string_block()
        except (AdbError, OSError, EOFError, ValueError) as exc:
            raise DeviceGone(f"{command}: {exc}") from None
        finally:
            c.close()

    def state(self, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
        """"device", "offline", "unauthorized", ... or None when the server lists no such serial."""
        try:
            listing = self.host_query("host:devices", timeout)
        except DeviceGone:
            return None
        for line in listing.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == self.serial:
                return parts[1]
        return None

    def reconnect(self, timeout: float = CONNECT_TIMEOUT_S) -> bool:
        """For network serials (host:port): ask the server to connect again."""
        host, _, port = self.serial.rpartition(":")
        if not host or not port.isdigit():
            return False
        try:
            answer = self.host_query(f"host:connect:{self.serial}", timeout)
        except DeviceGone:
            return False
        return "connected" in answer

    # ---- device services ----
    def open_service(self, service: str, timeout: float = CONNECT_TIMEOUT_S) -> adbutils.AdbConnection:
        """Switch to the device and open service; each step within timeout."""
        c = self._server_conn(timeout)
        try:
            c.send_command(f"host:transport:{self.serial}")
            c.check_okay()
            c.send_command(service)
            c.check_okay()
            return c
        except (AdbError, OSError, EOFError, ValueError) as exc:
            c.close()
            raise DeviceGone(f"{self.serial}: {service.split(':', 1)[0]}: {exc}") from None

    def shell(self, command: str, timeout: float = CALL_TIMEOUT_S, stdin: bytes | None = None) -> ShellResult:
        """Run command with the shell v2 protocol; the whole call ends within timeout."""
        deadline = time.monotonic() + timeout
        c = self.open_service(f"shell,v2,raw:{command}", min(timeout, CONNECT_TIMEOUT_S))
        out, err = bytearray(), bytearray()
        try:
            if stdin is not None:
                send_packet(c.conn, STDIN, stdin)
                send_packet(c.conn, CLOSE_STDIN, b"")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeviceGone(f"{self.serial}: `{command[:60]}` took more than {timeout:g}s")
                c.conn.settimeout(left)
                kind, data = read_packet(c.conn)
                if kind is None:
                    raise DeviceGone(f"{self.serial}: connection closed during `{command[:60]}`")
                if kind == STDOUT:
                    out += data
                elif kind == STDERR:
                    err += data
                elif kind == EXIT:
                    return ShellResult(data[0] if data else 255, bytes(out), bytes(err))
        except (OSError, EOFError) as exc:
            raise DeviceGone(f"{self.serial}: `{command[:60]}`: {exc}") from None
        finally:
            c.close()

    def read_file(self, path: str, timeout: float = CALL_TIMEOUT_S) -> bytes | None:
        """A file's bytes (`cat`), or None when it is missing or unreadable."""
        res = self.shell(f"cat {quote(path)}", timeout)
        return res.stdout if res.rc == 0 else None

    def push(self, local: str | os.PathLike, remote: str, mode: int = 0o644,
             progress: Callable[[int], None] | None = None, stall_timeout: float = 60.0) -> int:
        """sync SEND with a timeout on every chunk; progress(bytes_so_far)."""
        c = self.open_service("sync:", CONNECT_TIMEOUT_S)
        total = 0
        try:
            c.conn.settimeout(stall_timeout)
            path = f"{remote},{0o100000 | mode}".encode()
            c.conn.sendall(b"SEND" + struct.pack("<I", len(path)) + path)
            with open(local, "rb") as f:
                while True:
                    chunk = f.read(64 * 1024 - 8)
                    if not chunk:
                        break
                    c.conn.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                    total += len(chunk)
                    if progress:
                        progress(total)
            c.conn.sendall(b"DONE" + struct.pack("<I", int(time.time())))
            status = _recv_exact(c.conn, 8)
            if status[:4] != b"OKAY":
                n = struct.unpack("<I", status[4:8])[0]
                msg = _recv_exact(c.conn, n).decode(errors="replace")
                raise DeviceGone(f"{self.serial}: push {remote} failed: {msg}")
            return total
        except (OSError, EOFError) as exc:
            raise DeviceGone(f"{self.serial}: push {remote}: {exc}") from None
        finally:
            c.close()


def quote(text: str) -> str:
    """Single-quote for the device's /system/bin/sh."""
    return "'" + text.replace("'", "'\\''") + "'"


def send_packet(sock: socket.socket, kind: int, data: bytes) -> None:
    sock.sendall(struct.pack("<BI", kind, len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"connection closed ({len(buf)} of {n} bytes)")
        buf += chunk
    return bytes(buf)


def read_packet(sock: socket.socket) -> tuple[int | None, bytes]:
    """One shell v2 packet; (None, b"") at a clean end of stream."""
    first = sock.recv(1)
    if not first:
        return None, b""
    head = first + _recv_exact(sock, 4)
    kind, length = struct.unpack("<BI", head)
    return kind, _recv_exact(sock, length) if length else b""

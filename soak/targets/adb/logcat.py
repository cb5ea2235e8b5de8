"""logcat of the runner, into the engine log stream.

On Android MNN logs through __android_log_print with tag MNNJNI (its CL
errors are INFO level), not to stdout.  This follows `logcat -v threadtime`
for the runner's pid and tag MNNJNI (plus libc fatal lines, i.e. "Fatal
signal 11"), and hands each whole line to `sink`, which writes it into the
same stream as the runner's stderr, so soak's log parser sees it like host
output.  Lines keep their logcat prefix, so engine.log shows where they came from.
"""

from __future__ import annotations

import threading

from soak.targets.adb._conn import STDOUT, AdbLink, DeviceGone, read_packet

TAGS = ("MNNJNI:I", "libc:F", "'*:S'")  # quoted: the device shell would glob *:S


def logcat_command(pid: int) -> str:
    return f"logcat -v threadtime --pid={pid} " + " ".join(TAGS)


def line_pid(line: bytes) -> int | None:
    """The pid column of a threadtime line ("11-24 21:30:00.123  1234  1250 I MNNJNI  : ...")."""
    cols = line.split(None, 4)
    if len(cols) >= 3 and cols[2].isdigit():
        return int(cols[2])
    return None


class LogcatCapture(threading.Thread):
    def __init__(self, link: AdbLink, pid: int, sink):
        super().__init__(daemon=True, name=f"adb-logcat-{link.serial}-{pid}")
        self.link = link
        self.pid = pid
        self.sink = sink
        self.lines = 0
        self._conn = None
        self._stop = threading.Event()

    def run(self) -> None:
        try:
            self._conn = self.link.open_service(f"shell,v2,raw:{logcat_command(self.pid)}")
        except DeviceGone:
            return
        sock = self._conn.conn
        sock.settimeout(None)
        buf = b""
        try:
            while not self._stop.is_set():
                kind, data = read_packet(sock)
                if kind is None or kind == 3:
                    break
                if kind != STDOUT:
                    continue
                buf += data
                *complete, buf = buf.split(b"\n")
                for line in complete:
                    line = line.rstrip(b"\r")
                    if line and line_pid(line) == self.pid:  # older logcat ignores --pid
                        self.lines += 1
                        self.sink(line + b"\n")
        except (OSError, EOFError, ValueError):
            pass
        finally:
            self._conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._conn is not None:
            try:
                self._conn.conn.shutdown(2)
            except (OSError, Exception):
                pass

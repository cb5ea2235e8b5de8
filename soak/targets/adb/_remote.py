"""A worker process on the device, behind one shell v2 stream.

shell v2 keeps stdout, stderr and the exit status apart and gives no PTY, so
nothing is mangled and nothing gets SIGHUP when a short shell ends (plain
`shell:` does both; see the research note).  A thread splits the stream into
two local pipes, so the supervisor reads `stdout`/`stderr` like a Popen's.
"""

from __future__ import annotations

import os
import re
import signal
import threading

from soak.targets.adb._conn import CLOSE_STDIN, EXIT, STDERR, STDIN, STDOUT, AdbLink, DeviceGone, read_packet, send_packet

PID_LINE = re.compile(rb"^soak-remote-pid (\d+)\n")
LOST_EXIT = 255  # what `adb shell` itself returns when the connection drops
MAX_PACKET = 4096 - 5  # adbd's smallest shell-protocol buffer, header included


class _Stdin:
    """Binary write end: each write becomes STDIN packets."""

    def __init__(self, proc: "RemoteProcess"):
        self._proc = proc
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.closed:
            raise ValueError("write to closed stdin")
        view = memoryview(bytes(data))
        try:
            with self._proc._send_lock:
                for i in range(0, len(view), MAX_PACKET):
                    send_packet(self._proc._sock, STDIN, view[i:i + MAX_PACKET].tobytes())
        except OSError as exc:
            raise BrokenPipeError(f"device stream closed: {exc}") from None
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            with self._proc._send_lock:
                send_packet(self._proc._sock, CLOSE_STDIN, b"")
        except OSError:
            pass


class RemoteProcess:
    """Popen-like: stdin/stdout/stderr (binary), pid (on the device), poll/wait/kill."""

    def __init__(self, link: AdbLink, command: str, connect_timeout: float = 10.0, on_exit=None):
        self.link = link
        self._on_exit = on_exit  # called with self once the exit status is known, before stderr closes
        self._conn = link.open_service(f"shell,v2,raw:{command}", connect_timeout)
        self._sock = self._conn.conn
        self._sock.settimeout(None)
        self._send_lock = threading.Lock()
        self._err_lock = threading.Lock()  # whole lines only: logcat lines are interleaved
        self._err_open = True
        out_r, self._out_w = os.pipe()
        err_r, self._err_w = os.pipe()
        self.stdout = open(out_r, "rb")
        self.stderr = open(err_r, "rb")
        self.stdin = _Stdin(self)
        self.returncode: int | None = None
        self.lost = False  # the stream ended without an exit status (device gone)
        self._pid: int | None = None
        self._pid_known = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True, name=f"adb-worker-{link.serial}")
        self._thread.start()

    @property
    def pid(self) -> int | None:
        self._pid_known.wait(5.0)
        return self._pid

    def _pump(self) -> None:
        head = b""
        err_tail = b""
        code = None
        try:
            while True:
                kind, data = read_packet(self._sock)
                if kind is None:
                    break
                if kind == STDOUT:
                    os.write(self._out_w, data)
                elif kind == STDERR:
                    if not self._pid_known.is_set():
                        head += data
                        if b"\n" not in head:
                            continue
                        m = PID_LINE.match(head)
                        if m:
                            self._pid = int(m.group(1))
                            head = head[m.end():]
                        self._pid_known.set()
                        data, head = head, b""
                    if data:
                        err_tail = self._write_lines(err_tail + data)
                elif kind == EXIT:
                    code = data[0] if data else LOST_EXIT
                    break
        except (OSError, EOFError, ValueError):
            pass
        finally:
            rest = err_tail + head
            if rest:
                self._write_err(rest)
            self._pid_known.set()
            if code is None:
                self.lost = True
                self.returncode = LOST_EXIT
            else:
                # adbd reports death by signal N as 128 + N
                self.returncode = -(code - 128) if 128 < code < 128 + 65 else code
            self._conn.close()
            try:
                os.close(self._out_w)
            except OSError:
                pass
            self._done.set()
            if self._on_exit is not None:
                try:
                    self._on_exit(self)
                except Exception:  # a note for the log; never break the worker's end
                    pass
            with self._err_lock:
                self._err_open = False
                try:
                    os.close(self._err_w)
                except OSError:
                    pass

    def _write_err(self, data: bytes) -> None:
        with self._err_lock:
            if not self._err_open:
                return
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._err_w, view)
                    view = view[n:]
            except OSError:
                pass

    def _write_lines(self, data: bytes) -> bytes:
        """Writes the complete lines of data; returns the unfinished rest."""
        cut = data.rfind(b"\n") + 1
        if cut:
            self._write_err(data[:cut])
        return data[cut:]

    def inject(self, line: bytes) -> None:
        """Adds a whole line (logcat, tombstone note) to the engine log stream."""
        self._write_err(line if line.endswith(b"\n") else line + b"\n")

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        self._done.wait(timeout)
        return self.poll()

    def kill(self) -> None:
        """SIGKILL on the device, then drop the stream (which also ends it)."""
        if self._done.is_set():
            return
        pid = self._pid
        if pid:
            try:
                self.link.shell(f"kill -{signal.SIGKILL.value} {pid}", timeout=5.0)
            except DeviceGone:
                pass
        if not self._done.wait(3.0):
            try:
                self._sock.shutdown(2)
            except OSError:
                pass

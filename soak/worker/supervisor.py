"""Drive one worker process: send commands, watch time, capture output.

The worker's stderr is the engine's raw output.  A reader thread appends it
to engine.log as it arrives (nothing is buffered in soak), removes the
protocol's marker lines, and files each engine line under the command that
printed it.  A call ends in one of three ways: a result, the worker's death
(crash), or the phase watchdog killing it (hang).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from soak import errors
from soak.logparse import parse_line
from soak.targets.base import Target, WorkerProcess
from soak.worker import protocol

SIGNAL_NAMES = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV",
                13: "SIGPIPE", 15: "SIGTERM"}


def signal_name(exit_code: int | None) -> str | None:
    if exit_code is None or exit_code >= 0:
        # adb and shells report death-by-signal as 128+N
        if exit_code is not None and 128 < exit_code < 160:
            return SIGNAL_NAMES.get(exit_code - 128, f"SIG{exit_code - 128}")
        return None
    return SIGNAL_NAMES.get(-exit_code, f"SIG{-exit_code}")


@dataclass
class LogLine:
    text: str
    offset: int
    parsed: dict | None


@dataclass
class CallOutcome:
    op: str
    result: dict | None = None
    died: bool = False
    hung: bool = False
    lost: bool = False  # the connection to a remote worker dropped (device offline): not a crash
    exit_code: int | None = None
    signal: str | None = None
    lines: list[LogLine] = field(default_factory=list)
    span: tuple[int, int] = (0, 0)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None and bool(self.result.get("ok"))


class WorkerDead(Exception):
    """The connection to a remote worker dropped before its hello (the device went away)."""


class _LogCapture(threading.Thread):
    """Reads the engine stream, writes engine.log, groups lines per command."""

    def __init__(self, stream, log_file, on_line=None):
        super().__init__(daemon=True, name="soak-log-capture")
        self.stream = stream
        self.log_file = log_file
        self.on_line = on_line
        self.cond = threading.Condition()
        self.pending: list[LogLine] = []
        self.pending_start = log_file.tell()
        self.done: dict[int, tuple[list[LogLine], tuple[int, int]]] = {}
        self.eof = False

    def _line(self, raw: bytes) -> None:
        pos = raw.find(protocol.MARKER_PREFIX)
        if pos >= 0:
            before, rest = raw[:pos], raw[pos + len(protocol.MARKER_PREFIX):]
            if before:
                self._write_text(before + b"\n")
            try:
                cmd_id = int(rest.strip() or b"-1")
            except ValueError:
                cmd_id = -1
            with self.cond:
                end = self.log_file.tell()
                self.done[cmd_id] = (self.pending, (self.pending_start, end))
                self.pending = []
                self.pending_start = end
                self.cond.notify_all()
            return
        self._write_text(raw)

    def _write_text(self, raw: bytes) -> None:
        offset = self.log_file.tell()
        self.log_file.write(raw)
        self.log_file.flush()
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        line = LogLine(text, offset, parse_line(text))
        with self.cond:
            self.pending.append(line)
        if self.on_line:
            self.on_line(line)

    def run(self) -> None:
        buf = b""
        read = getattr(self.stream, "read1", None) or self.stream.read
        while True:
            try:
                chunk = read(65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self._line(raw + b"\n")
        if buf:
            self._line(buf)
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def take(self, cmd_id: int, wait_s: float) -> tuple[list[LogLine], tuple[int, int]]:
        """Lines printed during command cmd_id (waits briefly for its marker)."""
        deadline = time.monotonic() + wait_s
        with self.cond:
            while cmd_id not in self.done and not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            if cmd_id in self.done:
                return self.done.pop(cmd_id)
            lines, start = self.pending, self.pending_start
            self.pending = []
            self.pending_start = self.log_file.tell()
            return lines, (start, self.pending_start)


class _ResultReader(threading.Thread):
    def __init__(self, stream):
        super().__init__(daemon=True, name="soak-result-reader")
        self.stream = stream
        self.queue: queue.Queue = queue.Queue()

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            try:
                self.queue.put(json.loads(raw))
            except json.JSONDecodeError:
                self.queue.put({"op": "garbled", "raw": raw[:200].decode(errors="replace")})
        self.queue.put(None)  # EOF: the worker is gone


class Supervisor:
    """One worker process at a time; `restart()` replaces it."""

    def __init__(self, target: Target, engine_log: Path, cwd: Path, env: dict[str, str] | None = None,
                 on_line=None):
        self.target = target
        self.cwd = cwd
        self.env = env or {}
        self.on_line = on_line
        self._log_file = open(engine_log, "ab", buffering=0)
        self.proc: WorkerProcess | None = None
        self.generation = -1
        self.hello: dict | None = None
        self.last_pid: int | None = None
        self._next_id = 0
        self._log: _LogCapture | None = None
        self._results: _ResultReader | None = None

    @property
    def pid(self) -> int | None:
        if self.proc is None:
            return None
        if self.hello and self.hello.get("pid") and getattr(self.target, "remote_pids", False):
            return int(self.hello["pid"])
        return self.proc.pid

    @property
    def log_offset(self) -> int:
        return self._log_file.tell()

    def start(self, timeout_s: float = 30.0) -> dict:
        """Start a worker and wait for its hello.  A worker that does not say a valid hello is
        soak's problem, not the engine's (no engine code runs before it): HarnessError.
        WorkerDead: a remote worker's connection dropped (its target records why)."""
        self.generation += 1
        self.proc = self.target.spawn_worker(self.env, self.cwd)
        self._log = _LogCapture(self.proc.stderr, self._log_file, self.on_line)
        self._results = _ResultReader(self.proc.stdout)
        self._log.start()
        self._results.start()
        timed_out = False
        try:
            hello = self._results.queue.get(timeout=timeout_s)
        except queue.Empty:
            hello, timed_out = None, True
        problem = protocol.hello_problem(hello)
        if problem:
            lost = bool(getattr(self.proc, "lost", False))
            code = self.stop(kill=True)
            if lost:
                raise WorkerDead(f"lost the connection to the worker before its hello (exit {code})")
            said = [line.text.strip() for line in self._log.pending if line.text.strip()]
            if timed_out:
                problem = f"it said nothing within {timeout_s:g}s"
            elif hello is None:
                problem = f"it exited ({code})" + (f": {said[-1]}" if said else " without a word")
            elif hello.get("op") == "garbled":
                problem = f"its first line is not a hello: {hello.get('raw')!r}"
            raise errors.HarnessError(f"soak's worker did not start: {problem}", self.target.worker_hint())
        self.hello = hello
        self.last_pid = self.pid
        return hello

    def call(self, op: str, *args, timeout_s: float) -> CallOutcome:
        if self.proc is None:  # already gone: the caller's recovery decides what next
            return CallOutcome(op, died=True)
        self._next_id += 1
        cmd_id = self._next_id
        outcome = CallOutcome(op)
        started = time.monotonic()
        try:
            self.proc.stdin.write(protocol.encode_command(op, cmd_id, *args))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it died; the result reader will see EOF
        deadline = started + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                outcome.hung = True
                break
            try:
                item = self._results.queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if item is None:
                outcome.died = True
                break
            if item.get("id") == cmd_id:
                outcome.result = item
                break
        outcome.elapsed_s = time.monotonic() - started
        if outcome.hung:
            outcome.exit_code = self.stop(kill=True)
        elif outcome.died:
            outcome.lost = bool(getattr(self.proc, "lost", False))
            outcome.exit_code = self.proc.wait(5.0)
            if outcome.exit_code is None:
                outcome.exit_code = self.stop(kill=True)
            else:
                self._reap()
        if outcome.exit_code is not None:
            outcome.signal = signal_name(outcome.exit_code)
        outcome.lines, outcome.span = self._log.take(cmd_id, wait_s=2.0 if outcome.result else 3.0)
        return outcome

    def _reap(self) -> None:
        if self._log:
            self._log.join(timeout=3.0)
        self.proc = None

    def stop(self, kill: bool = False, timeout_s: float = 5.0) -> int | None:
        """End the worker; returns its exit status."""
        if self.proc is None:
            return None
        proc = self.proc
        if not kill:
            try:
                proc.stdin.write(protocol.encode_command("quit", 0))
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            code = proc.wait(timeout_s)
            if code is not None:
                self._reap()
                return code
        proc.kill()
        code = proc.wait(timeout_s)
        self._reap()
        return code

    def close(self) -> None:
        self.stop()
        self._log_file.close()

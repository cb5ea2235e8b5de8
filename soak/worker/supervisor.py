"""Drive one worker process: send commands, watch time, capture output.

The worker's stderr is the engine's raw output.  While a call runs, the
supervisor reads it and the result stream in the same thread, appends engine
text to engine.log as it arrives, removes the protocol's marker lines, and
files each engine line under the command that printed it.  A call ends in one
of three ways: a result, the worker's death (crash), or the watchdog killing
it (hang): the whole-call timeout, or for a streaming respond the stall timer
(no progress line for a few seconds).
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from soak import errors, signals
from soak.diagnostics import get_logger
from soak.logparse import parse_line
from soak.worker import protocol
from soak.worker.protocol import WorkerHost, WorkerProcess



# Result lines as both workers write them (compact JSON, "id" then "op" first): a progress line, or
# another command's result, is recognised without decoding it.  A line of any other shape is
# decoded in full.
_HEAD = re.compile(rb'\{"id":(-?\d+),"op":"([a-z_]+)"')
_PROGRESS = re.compile(rb'\{"id":-?\d+,"op":"progress","tokens":(\d+)\}\r?')


_json_decode = json.JSONDecoder().decode  # made once; fed str (json.loads on bytes sniffs the encoding first)
diag = get_logger(__name__)


def _decode(raw: bytes | dict) -> dict:
    if isinstance(raw, dict):
        return raw
    try:
        item = _json_decode(raw.decode())
    except ValueError:  # not JSON, or not UTF-8 (JSONDecodeError and UnicodeDecodeError both are)
        item = None
    if not isinstance(item, dict):
        return {"op": "garbled", "raw": raw[:200].decode(errors="replace")}
    return item


def signal_name(exit_code: int | None) -> str | None:
    if exit_code is None or exit_code >= 0:
        # adb and shells report death-by-signal as 128+N
        if exit_code is not None and 128 < exit_code < 160:
            return signals.name(exit_code - 128)
        return None
    return signals.name(-exit_code)


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
    local_file: object = None  # died: the target's module path -> file here (soak.backtrace.symbolize)
    stalled: bool = False  # hung by the stall timer: no text for stall_limit_s while streaming
    stall_limit_s: float | None = None
    tokens: int = 0  # chunks the worker reported streaming before the end
    exit_code: int | None = None
    signal: str | None = None
    lines: list[LogLine] = field(default_factory=list)
    span: tuple[int, int] = (0, 0)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None and bool(self.result.get("ok"))


class Aborted(BaseException):
    """Supervisor.abort() was called (from another thread): the call in flight is left as it is,
    neither a result nor a fault.  A BaseException, like KeyboardInterrupt: no handler of
    ordinary errors on the way up may take it for one."""


class WorkerDead(Exception):
    """The connection to a remote worker dropped before its hello (the device went away)."""


class _Streams:
    """Reads the worker's two streams in the calling thread: results (JSON lines) and
    the engine's raw output.  Engine text goes to engine.log as it is read, markers
    removed, each line filed under the command that printed it.  No reader threads and
    no queues: a call costs one write and the reads its answer needs.  Between calls
    nothing is read; the pipe holds what the engine prints meanwhile (up to its size,
    64 KiB on Linux) and the next call files it."""

    def __init__(self, proc: WorkerProcess, log_file, on_line=None, wake_fd: int | None = None):
        self.log_file = log_file
        self.on_line = on_line
        self.res_fd = proc.stdout.fileno()
        self.log_fd = proc.stderr.fileno()
        self.poller = select.poll()
        self.poller.register(self.res_fd, select.POLLIN)
        self.poller.register(self.log_fd, select.POLLIN)
        self.wake_fd = wake_fd  # readable after Supervisor.abort(): ends a wait at once
        if wake_fd is not None:
            self.poller.register(wake_fd, select.POLLIN)
        self.res_buf = b""
        self.log_buf = b""
        self.results: deque[bytes | dict] = deque()  # result lines, undecoded (see _HEAD)
        self.res_eof = False
        self.eof = False  # of the log stream
        self.pending: list[LogLine] = []
        self.pos = log_file.tell()  # engine.log's size: kept here, not asked of the OS per line
        self.pending_start = self.pos
        self.done: dict[int, tuple[list[LogLine], tuple[int, int]]] = {}

    def pump(self, timeout_s: float) -> None:
        """Wait up to timeout_s for either stream, then read what is there."""
        if self.res_eof and self.eof:
            return
        try:
            ready = self.poller.poll(max(0, math.ceil(timeout_s * 1000)))
        except InterruptedError:
            return
        for fd, _ in ready:
            if fd == self.wake_fd:
                try:
                    os.read(fd, 64)  # the caller sees Supervisor.aborted
                except OSError:
                    pass
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if fd == self.res_fd:
                self._results(chunk)
            else:
                self._log(chunk)

    def _results(self, chunk: bytes) -> None:
        if not chunk:
            self.res_eof = True
            self.poller.unregister(self.res_fd)
            if self.res_buf.strip():  # an unterminated last line: cut off by the worker's end
                self.results.append({"op": "garbled", "raw": self.res_buf[:200].decode(errors="replace")})
            self.res_buf = b""
            return
        self.res_buf += chunk
        if b"\n" not in chunk:
            return
        *lines, self.res_buf = self.res_buf.split(b"\n")
        self.results.extend(lines)

    def _log(self, chunk: bytes) -> None:
        if not chunk:
            self.eof = True
            self.poller.unregister(self.log_fd)
            if self.log_buf:
                self._line(self.log_buf)
            self.log_buf = b""
            return
        self.log_buf += chunk
        if b"\n" not in chunk:
            return
        *lines, self.log_buf = self.log_buf.split(b"\n")
        for raw in lines:
            self._line(raw + b"\n")

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
            end = self.pos
            self.done[cmd_id] = (self.pending, (self.pending_start, end))
            self.pending = []
            self.pending_start = end
            return
        self._write_text(raw)

    def _write_text(self, raw: bytes) -> None:
        offset = self.pos
        self.pos += self.log_file.write(raw) or 0
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        line = LogLine(text, offset, parse_line(text))
        self.pending.append(line)
        if self.on_line:
            self.on_line(line)

    def take(self, cmd_id: int, wait_s: float) -> tuple[list[LogLine], tuple[int, int]]:
        """Lines printed during command cmd_id (reads until its marker, briefly)."""
        deadline = time.monotonic() + wait_s
        while cmd_id not in self.done and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.pump(left)
        if cmd_id in self.done:
            return self.done.pop(cmd_id)
        lines, start = self.pending, self.pending_start
        self.pending = []
        self.pending_start = self.pos
        return lines, (start, self.pending_start)

    def drain(self, wait_s: float) -> None:
        """Read the log stream to its end (the worker is gone), for at most wait_s."""
        deadline = time.monotonic() + wait_s
        while not self.eof and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())


@dataclass
class StallPolicy:
    """When a streaming respond counts as stalled, apart from the whole-call timeout.

    After a chunk: no next one for `stall_s`, or 4x the slowest gap seen (so a slow
    but steady device is not killed).  Before the first chunk (prefill, which a
    throttled device or a longer context slows most): 10x what the first chunk took
    so far (per prompt byte; on the first call after a load also twice the load
    time), at least 10x `stall_s`.  With nothing measured yet (the first call of a
    run: MNN builds and tunes its kernels there) only the whole-call timeout."""

    stall_s: float | None = None  # None: no stall timer
    load_s: float = 0.0
    first_ttft_s: float | None = None     # slowest first chunk of a first call after a load
    ttft_per_byte_s: float | None = None  # slowest first chunk per prompt byte, later calls
    max_gap_s: float = 0.0

    def first_chunk_s(self, first_after_load: bool, prompt_bytes: int) -> float | None:
        if self.stall_s is None:
            return None
        if first_after_load or self.ttft_per_byte_s is None:
            if self.first_ttft_s is None:
                return None
            return max(10 * self.stall_s, 10 * self.first_ttft_s, 2 * self.load_s if first_after_load else 0.0)
        return max(10 * self.stall_s, 10 * self.ttft_per_byte_s * max(prompt_bytes, 64))

    def gap_s(self, gap_in_call: float, first_after_load: bool) -> float | None:
        """None (only the whole-call timeout) on the first call after a load and before any call
        finished with measured gaps: a cold engine builds its decode kernels after the first token
        (MNN 3.6.1 on PoCL: 20-300 s between tokens 1 and 2, which a 3 s timer killed as hangs)."""
        if self.stall_s is None or first_after_load or self.max_gap_s == 0.0:
            return None
        return max(self.stall_s, 4 * max(self.max_gap_s, gap_in_call))

    def observe(self, first_after_load: bool, prompt_bytes: int, timing: dict) -> None:
        ttft = timing.get("ttft_us")
        if ttft is not None:
            if first_after_load:
                self.first_ttft_s = max(self.first_ttft_s or 0.0, ttft / 1e6)
            else:
                rate = ttft / 1e6 / max(prompt_bytes, 64)
                self.ttft_per_byte_s = max(self.ttft_per_byte_s or 0.0, rate)
        gap = timing.get("itl_max_us")
        if gap is not None:
            self.max_gap_s = max(self.max_gap_s, gap / 1e6)


def _note_end(op: str, outcome: CallOutcome, timeout_s: float, generation: int) -> None:
    """The supervisor's decision on a call that gave no result, as a diagnostic (debug)."""
    if outcome.hung:
        why = "no progress within the stall limit" if outcome.stalled else "no result within the call timeout"
        diag.debug(f"killed the worker: {why}", op=op, generation=generation, after_s=round(outcome.elapsed_s, 3),
                   limit_s=outcome.stall_limit_s if outcome.stalled else timeout_s, tokens=outcome.tokens)
    else:
        diag.debug("the worker died" + (" (connection lost)" if outcome.lost else ""), op=op, generation=generation,
                   exit_code=outcome.exit_code, signal=outcome.signal, after_s=round(outcome.elapsed_s, 3))


class Supervisor:
    """One worker process at a time; `restart()` replaces it."""

    def __init__(self, target: WorkerHost, engine_log: Path, cwd: Path, env: dict[str, str] | None = None,
                 on_line=None, stall_s: float | None = None):
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
        self._io: _Streams | None = None
        self.stall = StallPolicy(stall_s)
        self.streams = False  # the open engine streams its text (progress lines come)
        self._first_after_load = True
        self.aborted = False
        self._wake_lock = threading.Lock()  # abort() from another thread vs close()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def abort(self) -> None:
        """From any thread: the call or start in flight (and any later one) raises Aborted.
        stop() and close() still work, so the caller can end the worker."""
        self.aborted = True
        with self._wake_lock:
            if self._wake_w is None:  # closed
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass  # the pipe is full: it was woken already

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
        if self.aborted:
            raise Aborted
        self.generation += 1
        self.streams = False
        self.proc = self.target.spawn_worker(self.env, self.cwd)
        self._io = _Streams(self.proc, self._log_file, self.on_line, self._wake_r)
        deadline = time.monotonic() + timeout_s
        while not self._io.results and not self._io.res_eof and time.monotonic() < deadline:
            if self.aborted:
                raise Aborted
            self._io.pump(deadline - time.monotonic())
        hello = _decode(self._io.results.popleft()) if self._io.results else None
        timed_out = hello is None and not self._io.res_eof
        problem = protocol.hello_problem(hello)
        if problem:
            lost = bool(getattr(self.proc, "lost", False))
            code = self.stop(kill=True)
            if lost:
                raise WorkerDead(f"lost the connection to the worker before its hello (exit {code})")
            said = [line.text.strip() for line in self._io.pending if line.text.strip()]
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
        """Send op and wait for its result, the worker's death, the whole-call timeout or, for a
        streaming respond, a stall (see StallPolicy)."""
        if self.aborted:
            raise Aborted
        if self.proc is None:  # already gone: the caller's recovery decides what next
            return CallOutcome(op, died=True)
        io = self._io
        self._next_id += 1
        cmd_id = self._next_id
        data = protocol.encode_command(op, cmd_id, *args)
        outcome = CallOutcome(op)
        started = time.monotonic()
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it died; the result stream will end
        deadline = started + timeout_s
        watch = op == "respond" and self.streams and self.stall.stall_s is not None
        first_after_load = self._first_after_load
        prompt_bytes = len(args[1]) if op == "respond" and len(args) > 1 else 0
        first_limit = self.stall.first_chunk_s(first_after_load, prompt_bytes) if watch else None
        tokens, last_t, gap = 0, started, 0.0
        while True:
            while io.results:
                raw = io.results.popleft()
                head = _HEAD.match(raw) if isinstance(raw, bytes) else None
                if head is not None and int(head[1]) != cmd_id:
                    continue  # a stale line (an earlier call's, after a timeout)
                progress = _PROGRESS.fullmatch(raw) if head is not None and head[2] == b"progress" else None
                item = None if progress is not None else _decode(raw)
                if progress is not None or (item.get("id") == cmd_id and item.get("op") == "progress"):
                    now = time.monotonic()
                    n = int(progress[1] if progress is not None else item.get("tokens") or 0)
                    if tokens and n > tokens:
                        gap = max(gap, (now - last_t) / (n - tokens))
                    tokens, last_t = n, now
                    continue
                if item.get("id") != cmd_id:
                    continue  # a stale line
                outcome.result = item
                break
            if outcome.result is not None:
                break
            if io.res_eof:
                outcome.died = True
                outcome.local_file = getattr(self.target, "local_file", None)
                break
            now = time.monotonic()
            limit = deadline
            if watch:
                allowed = self.stall.gap_s(gap, first_after_load) if tokens else first_limit
                if allowed is not None:
                    limit = min(limit, last_t + allowed)
            if now >= limit:
                outcome.hung = True
                if limit < deadline:
                    outcome.stalled = True
                    outcome.stall_limit_s = round(limit - last_t, 3)
                break
            io.pump(limit - now)
            if self.aborted:
                raise Aborted
        outcome.elapsed_s = time.monotonic() - started
        outcome.tokens = tokens
        if outcome.hung:
            outcome.exit_code = self.stop(kill=True)
        elif outcome.died:
            outcome.lost = bool(getattr(self.proc, "lost", False))
            outcome.exit_code = self._wait_draining(5.0)
            if outcome.exit_code is None:
                outcome.exit_code = self.stop(kill=True)
            else:
                self._reap()
        if outcome.exit_code is not None:
            outcome.signal = signal_name(outcome.exit_code)
        if outcome.hung or outcome.died:
            _note_end(op, outcome, timeout_s, self.generation)
        outcome.lines, outcome.span = io.take(cmd_id, 2.0 if outcome.result else 3.0)
        self._learn(op, outcome, first_after_load, prompt_bytes)
        return outcome

    def _learn(self, op: str, outcome: CallOutcome, first_after_load: bool, prompt_bytes: int) -> None:
        result = outcome.result
        if op == "open" and result is not None:
            self.streams = bool(result.get("streams"))
        elif op == "load" and outcome.ok:
            self.stall.load_s = max(self.stall.load_s, outcome.elapsed_s)
            self._first_after_load = True
        elif op == "respond" and result is not None:
            self._first_after_load = False
            if result.get("timing"):
                self.stall.observe(first_after_load, prompt_bytes, result["timing"])

    def _wait_draining(self, timeout_s: float) -> int | None:
        """The worker's exit status, reading its log meanwhile (a full pipe can't block its exit)."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.proc.poll()
            if code is not None or time.monotonic() >= deadline:
                return code
            if self._io is not None and not self._io.eof:
                self._io.pump(min(0.05, deadline - time.monotonic()))
            else:
                code = self.proc.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                if code is not None:
                    return code

    def _reap(self) -> None:
        if self._io:
            self._io.drain(3.0)
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
            code = self._wait_draining(timeout_s)
            if code is not None:
                self._reap()
                return code
            diag.debug("killed the worker: it did not quit", within_s=timeout_s, generation=self.generation)
        proc.kill()
        code = proc.wait(timeout_s)
        self._reap()
        return code

    def close(self) -> None:
        self.stop()
        self._log_file.close()
        with self._wake_lock:
            if self._wake_w is not None:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = None

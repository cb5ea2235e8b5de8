"""The Python worker: hosts one engine and answers protocol commands.

Started by soak.targets.local from the supervisor's own package (by hand:
`python -m soak.worker`).  stdin carries commands, stdout results; the
engine's own output (C stdout and stderr, where MNN printfs) goes to fd 2,
unbuffered, so the supervisor sees every line even if the engine crashes.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time

from soak.cl.trace import PhaseMarker
from soak.engine import abi
from soak.errors import SoakError
from soak.oracle import wire as oracle_wire
from soak.worker import protocol
from soak.worker.protocol import WORKER_ERROR_KINDS, worker_error_kind

ORACLE_OPS = oracle_wire.OPS


def _failed(kind: str, error: str, **more) -> dict:
    return dict(ok=False, rc=WORKER_ERROR_KINDS[kind].rc, error=error, error_kind=kind, **more)


def _unbuffer_c_stdout() -> None:
    libc = ctypes.CDLL(None)
    try:
        c_stdout = ctypes.c_void_p.in_dll(libc, "stdout")
    except ValueError:
        return
    libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t]
    libc.setvbuf(c_stdout, None, 2, 0)  # _IONBF


def _open_engine(spec: dict):
    kind = spec.get("kind", "native")
    if kind == "native":
        from soak.engine.loader import NativeEngine

        return NativeEngine(spec["engine_lib"], spec["config_path"], spec.get("plugins", []))
    if kind == "pymnn":
        from soak.engine.pymnn import PyMnnEngine

        return PyMnnEngine(spec["config_path"])
    raise SoakError(f"unknown engine kind {kind!r}")


class _TokenClock:
    """Times each streamed chunk and writes throttled progress lines on the result stream.

    The first progress line goes out once the call has run PROGRESS_INTERVAL_S and a chunk has
    come, then at most every PROGRESS_INTERVAL_S: a respond that ends sooner sends none (its result
    says all), so a fast call costs the supervisor one wake-up, not two.  A chunk that is due a
    line but is followed by no other (the engine stalls right after it) is reported by the
    worker's _ProgressWatch thread within WATCH_S."""

    __slots__ = ("fd", "cmd_id", "times", "next_progress", "on_first", "reported", "lock", "done")

    def __init__(self, fd: int, cmd_id: int, started: float, lock, on_first=None):
        self.fd = fd
        self.cmd_id = cmd_id
        self.times: list[float] = []
        self.next_progress = started + protocol.PROGRESS_INTERVAL_S
        self.on_first = on_first  # called at the first chunk: prefill is over (--cl-profile phase mark)
        self.reported = 0  # chunks the last progress line counted
        self.lock = lock  # the worker's write lock on the result stream
        self.done = False  # the call is over: no more progress lines

    def tick(self) -> None:
        if self.on_first is not None and not self.times:
            self.on_first()
        t = time.perf_counter()
        self.times.append(t)
        if t >= self.next_progress:
            self.report(t)

    def report(self, t: float) -> None:
        """A progress line for the chunks so far (from the engine's callback or the watch thread)."""
        with self.lock:
            n = len(self.times)
            if self.done or n <= self.reported:
                return
            self.reported = n
            self.next_progress = t + protocol.PROGRESS_INTERVAL_S
            os.write(self.fd, protocol.progress_line(self.cmd_id, n))


class _ProgressWatch:
    """Reports a chunk that came but was not yet reported once its line is due (see _TokenClock):
    the engine's callback can't, when no chunk follows it.  A daemon thread that looks every
    WATCH_S, started with the first streaming respond; the engine's call releases the GIL."""

    WATCH_S = 0.05

    def __init__(self):
        self.clock: _TokenClock | None = None
        threading.Thread(target=self._run, name="soak-progress", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.WATCH_S)
            clock = self.clock
            if clock is not None and clock.times:
                now = time.perf_counter()
                if now >= clock.next_progress:
                    clock.report(now)


class Worker:
    def __init__(self, proto_fd: int, log_fd: int):
        self.proto_fd = proto_fd
        self.log_fd = log_fd
        self.engine = None
        self.write_lock = threading.Lock()  # the result stream: results and the watch's progress lines
        self.watch: _ProgressWatch | None = None
        # --cl-profile: the interposer's profile windows end at load/prefill/decode boundaries
        self.phases = PhaseMarker() if os.environ.get("SOAK_CL_PROFILE") == "1" else None

    def _mark(self, phase: str) -> None:
        if self.phases is not None:
            self.phases.mark(phase)

    def reply(self, cmd_id: int, op: str, **fields) -> None:
        result = {"id": cmd_id, "op": op, "ok": True, "rc": abi.OK, "error": None, "error_kind": None}
        result.update(fields)
        line = protocol.encode_result(result)
        # the marker, then at once the result (made before either is written): the supervisor,
        # woken by the first, usually finds both (one wake-up per call, not two)
        with self.write_lock:
            os.write(self.log_fd, protocol.marker(cmd_id))
            os.write(self.proto_fd, line)

    def _status(self) -> int:
        return self.engine.status() if self.engine is not None else abi.NOT_LOADED

    def handle(self, op: str, cmd_id: int, args: list[str]) -> bool:
        """Run one command; False means quit."""
        started = time.perf_counter()
        extra: dict = {}
        try:
            if op in ("set_config", "load", "respond", "reset", "reinit", "status", *ORACLE_OPS) and self.engine is None:
                raise SoakError("no engine open")
            if op == "open":
                if self.engine is not None:
                    self.engine.close()
                    self.engine = None
                spec = json.loads(protocol.payload(args[0]))
                self.engine = _open_engine(spec)
                extra["engine_name"] = getattr(self.engine, "name", spec.get("kind"))
                extra["streams"] = self.engine.streams
                extra["oracle_unavailable"] = getattr(self.engine, "oracle_unavailable", "it has no forward entry point")
            elif op == "set_config":
                self.engine.set_config(protocol.payload(args[0]).decode())
            elif op == "load":
                self._mark("load")
                try:
                    if not self.engine.load():
                        extra.update(_failed("load_failed", "load failed"))
                finally:
                    self._mark("idle")
            elif op == "respond":
                max_new = int(args[0])
                prompt = protocol.payload(args[1])
                if len(args) > 2:  # a config to set first (the test engine's iteration): no round trip of its own
                    self.engine.set_config(protocol.payload(args[2]).decode())
                # --cl-profile phases: prefill until the first streamed text, then decode
                self._mark("prefill" if self.engine.streams else "respond")
                try:
                    if self.engine.streams:
                        clock = _TokenClock(self.proto_fd, cmd_id, started, self.write_lock,
                                            (lambda: self._mark("decode")) if self.phases is not None else None)
                        if self.watch is None:
                            self.watch = _ProgressWatch()
                        self.watch.clock = clock
                        call = time.perf_counter()
                        try:
                            out = self.engine.respond(prompt, max_new, clock.tick)
                        finally:
                            self.watch.clock = None
                            with self.write_lock:
                                clock.done = True
                        extra["engine_us"] = int((time.perf_counter() - call) * 1e6)
                        extra["timing"] = protocol.token_timing(started, clock.times)
                    else:
                        call = time.perf_counter()
                        out = self.engine.respond(prompt, max_new)
                        extra["engine_us"] = int((time.perf_counter() - call) * 1e6)
                finally:
                    self._mark("idle")
                extra["output_b64"] = protocol.b64(out)
                tokens = getattr(self.engine, "last_tokens", None)
                if tokens is not None:
                    extra["output_tokens"] = list(tokens)
            elif op in ORACLE_OPS:            # teacher-forced turns: only their summary leaves the worker
                self._mark("respond")
                try:
                    call = time.perf_counter()
                    extra.update(oracle_wire.run(self.engine, op, protocol.payload(args[0])))
                    extra["engine_us"] = int((time.perf_counter() - call) * 1e6)
                finally:
                    self._mark("idle")
            elif op == "reset":
                self.engine.reset()
            elif op == "reinit":
                self._mark("load")
                try:
                    self.engine.reinit()
                finally:
                    self._mark("idle")
            elif op in ("close", "quit"):
                if self.engine is not None:
                    self.engine.close()
                    self.engine = None
        except SoakError as exc:
            extra.update(_failed(worker_error_kind(exc, op), exc.message, hint=exc.hint))
        except (ValueError, IndexError, KeyError) as exc:
            extra.update(_failed("bad_command", f"bad command: {exc}"))
        _reassert_crash_handler()
        if op in ("respond", "load", "status", "reinit", "reset", *ORACLE_OPS) and self.engine is not None:
            extra.setdefault("status", self._status())
            extra["perf"] = self.engine.perf()
        else:
            extra.setdefault("status", self._status())
        extra["wall_us"] = int((time.perf_counter() - started) * 1e6)
        self.reply(cmd_id, op, **extra)
        return op != "quit"


def _die_with_parent() -> None:
    """If soak itself is killed (even SIGKILL), take the worker down too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getppid()
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:
            os._exit(1)
    except (OSError, AttributeError):
        pass


_crash_lib: ctypes.CDLL | None = None  # soak's fatal-signal handler, once installed


def _install_crash_handler(fd: int) -> None:
    """soak's fatal-signal handler (native/crash): on SIGSEGV, SIGBUS, SIGABRT, SIGFPE or SIGILL the
    crashing thread's native frames go to the log stream, then the signal is raised again (the
    exit status stays that signal).  Installed after Python's faulthandler (PYTHONFAULTHANDLER
    enables it at start), so ours runs first and hands over to it.  SOAK_CRASH_LIB: the library
    soak's target built (empty: it could not); unset (a worker started by hand): built here.
    Without it the worker runs as before, with a note in the log."""
    from soak.errors import BuildFailed
    from soak.native_build import ensure_built

    try:
        path = os.environ.get("SOAK_CRASH_LIB")
        if path == "":
            return
        lib = ctypes.CDLL(path or str(ensure_built("soak_crash")))
        if lib.soak_crash_install(fd) != 0:
            raise OSError("sigaction failed")
        global _crash_lib
        _crash_lib = lib
    except (BuildFailed, OSError) as exc:
        os.write(fd, f"soak: no native backtraces on a crash: {exc}\n".encode())


def _reassert_crash_handler() -> None:
    """A library the engine loaded may have installed its own fatal-signal handler over soak's
    (libLLVM does, under PoCL, with SA_RESETHAND: two threads faulting at once then end the
    process before any handler writes a line): soak's goes back on top, handing over to it."""
    if _crash_lib is not None:
        _crash_lib.soak_crash_reassert()


def main() -> int:
    _die_with_parent()
    proto_fd = os.dup(1)
    os.dup2(2, 1)  # the engine's printf now goes to the log stream
    _unbuffer_c_stdout()
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    _install_crash_handler(2)
    worker = Worker(proto_fd, 2)
    os.write(proto_fd, protocol.encode_result(protocol.hello("python", os.getpid())))
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            op, cmd_id, args = protocol.parse_command(line)
        except protocol.BadCommand as exc:
            os.write(proto_fd, protocol.encode_result(
                {"id": -1, "op": "error", "ok": False, "error": str(exc), "error_kind": "bad_command"}))
            continue
        if not worker.handle(op, cmd_id, args):
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Worker protocol v1: commands as ASCII words, results as JSON lines.

Specified in docs/ARCHITECTURE.md; native/runner implements the same thing in C.
The error kinds a result may carry are tabled here, with the engine ABI return
code each is sent with (soak.errors, below the engine, holds only the exceptions).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from soak import errors
from soak.engine import abi

PROTOCOL_VERSION = 1
MARKER_PREFIX = b"\x1esoak:done "

OPS = ("open", "set_config", "load", "respond", "reset", "reinit", "status", "close", "quit",
       "reference", "check")  # the last two: the logits oracle (soak.oracle.wire; native/runner/teacher.c)


@dataclass(frozen=True)
class WorkerErrorKind:
    """One `error_kind` of the worker protocol (the Python worker and native/runner send these)."""
    name: str
    rc: int                              # the result's rc (an engine ABI return code)
    error: type[errors.SoakError] | None = None  # raised in soak (with its exit code) when `open` fails so
    what: str = ""


# The one table of worker error kinds.  A SoakError the Python worker catches is sent as the
# row whose `error` is its exact class ("create_failed" only for `open`; any other: engine_error).
WORKER_ERROR_KINDS: dict[str, WorkerErrorKind] = {k.name: k for k in (
    WorkerErrorKind("missing_library", abi.ERR_ENGINE, errors.LibraryNotFound, "engine or plugin library not found"),
    WorkerErrorKind("missing_symbol", abi.ERR_ENGINE, errors.MissingSymbol, "library lacks an ABI function"),
    WorkerErrorKind("wrong_arch", abi.ERR_ENGINE, errors.WrongArchitecture, "library built for another machine"),
    WorkerErrorKind("abi_mismatch", abi.ERR_ENGINE, errors.AbiMismatch, "library speaks another engine ABI version"),
    WorkerErrorKind("bad_input", abi.ERR_ENGINE, errors.BadInput, "model, config or prompt the engine refuses"),
    WorkerErrorKind("create_failed", abi.ERR_ENGINE, None, "soak_engine_create returned NULL"),
    WorkerErrorKind("load_failed", abi.ERR_ENGINE, None, "soak_engine_load failed"),
    WorkerErrorKind("engine_error", abi.ERR_ENGINE, None, "the engine refused a call"),
    WorkerErrorKind("bad_command", abi.ERR_INVALID_ARG, None, "a command the worker cannot parse"),
)}


def worker_error_kind(exc: errors.SoakError, op: str) -> str:
    """The error_kind the worker sends for an exception raised by `op`."""
    if type(exc) is errors.EngineError:
        return "create_failed" if op == "open" else "engine_error"
    for kind in WORKER_ERROR_KINDS.values():
        if kind.error is type(exc):
            return kind.name
    return "engine_error"


class WorkerProcess(Protocol):
    """A running worker.  Streams are binary: stdin takes commands, stdout
    gives results, stderr gives the engine's raw output."""

    stdin: BinaryIO
    stdout: BinaryIO
    stderr: BinaryIO

    @property
    def pid(self) -> int | None: ...

    def poll(self) -> int | None:
        """Exit status if it ended (negative: killed by that signal), else None."""

    def wait(self, timeout: float | None = None) -> int | None: ...

    def kill(self) -> None: ...


class WorkerHost(Protocol):
    """Where a worker runs, as the supervisor uses it (soak.targets.base.Target is one)."""

    remote_pids: bool  # True: the worker's pid is the one its hello reports (a device pid)

    def spawn_worker(self, env: dict[str, str], cwd: Path) -> WorkerProcess:
        """Start a worker.  env holds only the variables soak adds."""

    def worker_hint(self) -> str:
        """The fix to show when this host's worker does not start."""


def hello(runner: str, pid: int) -> dict:
    """The worker's first line.  A Python worker also says which soak it is (version, package
    folder): the supervisor refuses a worker that is not its own soak."""
    line = {"op": "hello", "protocol": PROTOCOL_VERSION, "pid": pid, "runner": runner}
    if runner == "python":
        import soak

        line.update(version=soak.__version__, package=package_dir())
    return line


def package_dir() -> str:
    """The folder of the soak package this process runs."""
    import os

    import soak

    return os.path.dirname(os.path.abspath(soak.__file__))


def hello_problem(hello: dict | None) -> str | None:
    """Why a worker's first line is not a usable hello (None: it is)."""
    if not hello or hello.get("op") != "hello":
        return "it sent no hello"
    if hello.get("protocol") != PROTOCOL_VERSION:
        return f"it speaks worker protocol {hello.get('protocol')}, this soak speaks {PROTOCOL_VERSION}"
    if hello.get("runner") == "python":
        import soak

        mine = (soak.__version__, package_dir())
        theirs = (hello.get("version"), hello.get("package"))
        if theirs != mine:
            return (f"it runs soak {theirs[0] or '(unknown version)'} from {theirs[1] or '(unknown folder)'}, "
                    f"not this soak {mine[0]} from {mine[1]}")
    return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def encode_command(op: str, cmd_id: int, *args) -> bytes:
    """One command line.  bytes/dict args are base64-encoded; ints as decimal."""
    words = [op.encode("ascii"), b"%d" % cmd_id]
    for arg in args:
        if isinstance(arg, (dict, list)):
            words.append(base64.b64encode(json.dumps(arg).encode()))
        elif isinstance(arg, bytes):
            words.append(base64.b64encode(arg) if arg else b"-")
        elif isinstance(arg, str):
            words.append(base64.b64encode(arg.encode()) if arg else b"-")
        else:
            words.append(b"%d" % int(arg))
    return b" ".join(words) + b"\n"


class BadCommand(ValueError):
    pass


def parse_command(line: bytes) -> tuple[str, int, list[str]]:
    try:
        words = line.decode("ascii", errors="strict").split()
    except UnicodeDecodeError:
        raise BadCommand(f"bad command (not ASCII): {line[:80]!r}") from None
    if len(words) < 2 or words[0] not in OPS:
        raise BadCommand(f"bad command: {line[:80]!r}")
    try:
        return words[0], int(words[1]), words[2:]
    except ValueError:
        raise BadCommand(f"bad command id: {line[:80]!r}") from None


def payload(word: str) -> bytes:
    return b"" if word == "-" else unb64(word)


# While a respond streams, the worker writes progress lines on the result stream,
#   {"id": <id>, "op": "progress", "tokens": <chunks so far>}
# once the call has run PROGRESS_INTERVAL_S and a chunk has come, then at most every
# PROGRESS_INTERVAL_S while chunks keep coming, so the supervisor can tell a stalled
# decode from a slow one.  A respond that ends sooner sends none (one wake-up of the
# supervisor per call); a due chunk that no chunk follows is reported by the worker's
# watch thread (soak/worker/main.py _ProgressWatch, native/runner watch_main).
PROGRESS_INTERVAL_S = 0.2


def progress_line(cmd_id: int, tokens: int) -> bytes:
    return b'{"id":%d,"op":"progress","tokens":%d}\n' % (cmd_id, tokens)


def percentile(sorted_values: list, p: float):
    """Nearest-rank percentile of an ascending list (None when empty); the C runner uses the same rule."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def token_timing(start: float, times: list[float]) -> dict:
    """Time to first chunk and inter-chunk latency (p50, p99, max), in whole microseconds."""
    us = [int((t - start) * 1e6) for t in times]
    gaps = sorted(b - a for a, b in zip(us, us[1:]))
    return {"ttft_us": us[0] if us else None, "itl_p50_us": percentile(gaps, 50),
            "itl_p99_us": percentile(gaps, 99), "itl_max_us": gaps[-1] if gaps else None}


def marker(cmd_id: int) -> bytes:
    return MARKER_PREFIX + str(cmd_id).encode() + b"\n"


_encode_compact = json.JSONEncoder(separators=(",", ":")).encode  # made once: json.dumps makes one per call


def encode_result(result: dict) -> bytes:
    return (_encode_compact(result) + "\n").encode()

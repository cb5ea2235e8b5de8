"""soak's own diagnostics: build notes, warnings, harness errors, and what the supervisor
decided and why (a worker killed at a timeout or a stall, a worker that died, a recovery, the
run given up).  One structlog configuration for all of them, on stderr:

- `console` (the default): one readable line each, `soak: building ...`, `soak: warning: ...`,
  with the details as `key=value` after the text;
- `json` (for CI: `soak --log-format json ...` or SOAK_LOG_FORMAT=json): one JSON object per
  line with `event` (the text), `level`, `logger` (the module), `timestamp` and the details.

`--log-level` / SOAK_LOG_LEVEL picks the least level shown (default info); the supervisor's
decisions are debug, so `--log-level debug` shows them.  stdout is never used (it is for
--json results), and nothing here goes near the event hot path: events.jsonl is written by
soak.events, by hand, and no diagnostic reaches it.  The configuration is soak's own (no
structlog.configure): a program that imports soak keeps its structlog set up as it was.

Commands' own output (tables, reports, `soak: error:` exit messages) is not a diagnostic and
is printed by the command; tests/core/test_diagnostics.py keeps bare stderr prints elsewhere out.
"""

from __future__ import annotations

import os
import sys
import threading

import structlog

FORMATS = ("console", "json")
LEVELS = ("debug", "info", "warning", "error")
ENV_FORMAT = "SOAK_LOG_FORMAT"
ENV_LEVEL = "SOAK_LOG_LEVEL"


class _Stderr:
    """Writes each rendered line to the sys.stderr of the moment (so a test's capture, or a
    redirect made after import, sees it).  A reentrant lock: a signal handler may log while
    the main thread is writing a line."""

    _lock = threading.RLock()

    def msg(self, line: str) -> None:
        stream = sys.stderr
        if stream is None:
            return
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stderr: a diagnostic never ends the run

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _console(_, level: str, event: dict) -> str:
    """`soak: [level: ]text  key=value ...` (text first: it reads as today's notes did)."""
    event.pop("logger", None)
    event.pop("timestamp", None)
    text = str(event.pop("event", ""))
    exc = event.pop("exception", None)
    head = "soak: " + (f"{level}: " if level in ("warning", "error", "critical") else "") + text
    details = "  ".join(f"{k}={_value(v)}" for k, v in event.items() if k != "level")
    return head + (f"  {details}" if details else "") + (f"\n{exc}" if exc else "")


def _head_first(_, __, event: dict) -> dict:
    """event, level, timestamp and logger first in each JSON line, then the details."""
    head = {k: event.pop(k) for k in ("event", "level", "timestamp", "logger") if k in event}
    return {**head, **event}


def _value(v) -> str:
    text = str(v)
    return repr(text) if (not text or any(c.isspace() for c in text)) else text


_state: dict = {"logger": None, "format": None, "level": None}


def _choice(value: str | None, env: str, allowed: tuple[str, ...], default: str) -> str:
    raw = value if value is not None else os.environ.get(env) or default
    got = raw.strip().lower()
    if got not in allowed:
        from soak.errors import BadInput

        where = f"{env}={raw}" if value is None else repr(raw)
        raise BadInput(f"{where}: not a {env.split('_')[-1].lower()} soak knows", hint=f"use one of {', '.join(allowed)}")
    return got


def configure(fmt: str | None = None, level: str | None = None) -> None:
    """Set the format (console, json) and least level (debug, info, warning, error); None takes
    SOAK_LOG_FORMAT / SOAK_LOG_LEVEL, else console and info.  BadInput for a name not known."""
    fmt = _choice(fmt, ENV_FORMAT, FORMATS, "console")
    level = _choice(level, ENV_LEVEL, LEVELS, "info")
    common = [structlog.processors.add_log_level]
    if fmt == "json":
        processors = [*common, structlog.processors.TimeStamper(fmt="iso", utc=True),
                      structlog.processors.format_exc_info, _head_first,
                      structlog.processors.JSONRenderer(default=str, ensure_ascii=False)]
    else:
        processors = [*common, structlog.processors.format_exc_info, _console]
    _state.update(format=fmt, level=level, logger=structlog.wrap_logger(
        _Stderr(), processors=processors, wrapper_class=structlog.make_filtering_bound_logger(level),
        context_class=dict, cache_logger_on_first_use=True))


def current() -> tuple[str, str]:
    """(format, level) in force (configured on first use when nobody did)."""
    if _state["logger"] is None:
        configure()
    return _state["format"], _state["level"]


def json_lines() -> bool:
    """Whether diagnostics are JSON lines now (False before a configuration succeeded)."""
    return _state["format"] == "json"


class Logger:
    """A module's diagnostics: `log = get_logger(__name__)`, then `log.info("text", key=value)`.
    Resolves the configuration at each call, so `configure()` after import takes effect."""

    def __init__(self, name: str):
        self.name = name

    def _emit(self, method: str, event: str, **fields) -> None:
        if _state["logger"] is None:
            configure()
        getattr(_state["logger"], method)(event, logger=self.name, **fields)

    def debug(self, event: str, **fields) -> None:
        self._emit("debug", event, **fields)

    def info(self, event: str, **fields) -> None:
        self._emit("info", event, **fields)

    def warning(self, event: str, **fields) -> None:
        self._emit("warning", event, **fields)

    def error(self, event: str, **fields) -> None:
        self._emit("error", event, **fields)


def get_logger(name: str) -> Logger:
    return Logger(name)

"""Ctrl-C and SIGTERM handlers for a run (one device's loop, or several devices at once)."""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def catch(handler) -> dict | None:
    """Install `handler` for SIGINT and SIGTERM; the handlers it replaced, for restore().  None
    (nothing installed) off the main thread: only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


def restore(previous: dict | None) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)

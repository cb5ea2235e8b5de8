"""Signals: their names (one table, one spelling each), and the Ctrl-C and SIGTERM handlers
for a run (one device's loop, or several devices at once).

A worker's death by a signal is recorded by name (`fault.signal`); the catalog matches
names (`match.signal`) and the signature keys on them.  The numbers are Linux's (Android's
too): they come from the worker's machine, not from this host, so they are not looked up in
Python's `signal` module (macOS numbers SIGBUS differently).
tests/core/test_vocabulary_tables.py fails when a second name table appears in soak/.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Linux signal numbers -> names
NAMES = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
         8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
         14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP",
         20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ",
         26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS"}
# other spellings of the same signals
ALIASES = {"SIGIOT": "SIGABRT", "SIGPOLL": "SIGIO", "SIGCLD": "SIGCHLD"}
NUMBERS = {name: number for number, name in NAMES.items()}


def name(sig) -> str | None:
    """11, -11, "11", "segv", "SIGSEGV", "SIGIOT" -> "SIGSEGV" / "SIGABRT": one spelling per
    signal.  A number with no name -> "SIG<n>"; a name soak does not know stays as written
    (upper case, SIG-prefixed); None, "" and booleans -> None."""
    if sig is None or isinstance(sig, bool):
        return None
    text = str(sig).strip().upper()
    if not text:
        return None
    if text.lstrip("-").isdigit():
        n = abs(int(text))
        return NAMES.get(n, f"SIG{n}")
    text = text if text.startswith("SIG") else "SIG" + text
    return ALIASES.get(text, text)


def known(sig) -> str | None:
    """The name of a signal this table knows (a number or a spelling of it), else None."""
    if isinstance(sig, bool) or not isinstance(sig, (int, str)):
        return None
    if isinstance(sig, str) and sig.strip().lstrip("-").isdigit():
        return None  # a number written as text is not a name
    text = name(sig)
    return text if text in NUMBERS else None


def catch(handler) -> dict | None:
    """Install `handler` for SIGINT and SIGTERM; the handlers it replaced, for restore().  None
    (nothing installed) off the main thread: only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}


def restore(previous: dict | None) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)

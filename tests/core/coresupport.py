"""Helpers for the core tests (importable: tests/core/conftest.py puts this folder on sys.path)."""

import os
import subprocess
import sys


def faults(events, kind=None, iteration=None):
    return [e for e in events if e["event"] == "fault" and (kind is None or e["kind"] == kind)
            and (iteration is None or e.get("iteration") == iteration)]


def recoveries(events):
    return {e["iteration"]: e for e in events if e["event"] == "recovery"}


def soak_cli(*args, cwd=None, timeout=120, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "soak", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)

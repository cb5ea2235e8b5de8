"""Fixtures for the real pip-MNN tests: the committed tiny models, a loaded engine,
the soak CLI, and a network audit that every Python process of a run inherits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "soak" / "models" / "qwen2-tiny" / "config.json"
RAW = REPO / "tests" / "data" / "models" / "qwen2-tiny-rawbytes" / "config.json"

# Imported by every Python process started with this folder first on PYTHONPATH
# (the soak CLI and its workers). An audit hook records anything that could leave
# the machine; loopback and AF_UNIX connections are allowed.
SITECUSTOMIZE = r'''
import json, os, sys
_LOG = os.environ.get("SOAK_TEST_NETLOG")
_LOCAL = ("localhost", "127.0.0.1", "::1", "", None)

def _local(addr):
    if isinstance(addr, (str, bytes)):      # AF_UNIX path
        return True
    if isinstance(addr, tuple) and addr:
        host = addr[0]
        return host in _LOCAL or str(host).startswith("127.")
    return False

def _record(event, detail):
    with open(_LOG, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "event": event, "detail": detail}, default=repr) + "\n")

def _hook(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        addr = args[1] if len(args) > 1 else None
        if not _local(addr):
            _record(event, repr(addr))
    elif event == "socket.getaddrinfo":
        if args[0] not in _LOCAL and not str(args[0]).startswith("127."):
            _record(event, repr(args[0]))
    elif event in ("os.system", "urllib.Request", "http.client.connect", "ftplib.connect",
                   "smtplib.connect", "webbrowser.open"):
        _record(event, repr(args[0]) if args else "")
    elif event == "subprocess.Popen":
        argv = args[1] if len(args) > 1 else None
        text = " ".join(map(str, argv)) if isinstance(argv, (list, tuple)) else str(argv)
        if "pip" in text or "curl" in text or "wget" in text:
            _record(event, text)

if _LOG:
    sys.addaudithook(_hook)
'''


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    assert TINY.is_file(), f"committed tiny model missing: {TINY} (tools/make_qwen2_model.py makes it)"
    return TINY


@pytest.fixture(scope="session")
def raw_model() -> Path:
    assert RAW.is_file(), f"raw-bytes model missing: {RAW}"
    return RAW


@pytest.fixture(scope="module")
def engine(tiny_model, tmp_path_factory):
    """One loaded PyMnnEngine on the tiny model (1 thread: CI has 2 shared cores)."""
    from soak.engine.pymnn import PyMnnEngine

    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("pymnn"))
    try:
        e = PyMnnEngine(str(tiny_model))
        e.set_config(json.dumps({"thread_num": 1}))
        assert e.load()
        yield e
        e.close()
    finally:
        os.chdir(cwd)


@pytest.fixture
def net_guard(tmp_path):
    """(env, read_log): env makes every Python process of a run audit network use."""
    folder = tmp_path / "netguard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "netlog.jsonl"
    log.write_text("")
    env = {"PYTHONPATH": os.pathsep.join([str(folder), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "SOAK_TEST_NETLOG": str(log)}

    def read_log() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    return env, read_log


@pytest.fixture(scope="session")
def netns_prefix() -> list[str]:
    """`unshare -rn` (a private network namespace, loopback only) when the host allows it."""
    if shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    return ["unshare", "-rn"] if probe.returncode == 0 else []


def soak_cli(*args, env=None, cwd=None, timeout=300, prefix=()):
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONPATH", str(REPO))
    full_env.update(env or {})
    return subprocess.run([*prefix, sys.executable, "-m", "soak", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def cli():
    """soak_cli(*args, env=None, cwd=None, timeout=300, prefix=()) -> CompletedProcess."""
    return soak_cli

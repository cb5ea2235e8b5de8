"""adbutils is the optional [adb] extra (issue 15): soak imports it only for adb targets,
says which pip command installs it when it is missing, and `soak devices` never leaves an
adb server behind (it starts none: it only connects to the one the user runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WITHOUT_ADBUTILS = ("import sys; sys.modules['adbutils'] = None; sys.modules['adbutils.errors'] = None; "
                    "from soak.cli import main; sys.exit(main(sys.argv[1:]))")


def _soak_without_adbutils(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    return subprocess.run([sys.executable, "-c", WITHOUT_ADBUTILS, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_missing_adbutils_names_the_extra_and_local_runs_do_not_need_it(tmp_path):
    res = _soak_without_adbutils("devices", cwd=tmp_path)
    assert res.returncode == 3 and "pip install 'soak[adb]'" in res.stderr and "Traceback" not in res.stderr
    res = _soak_without_adbutils("run", "--target", "adb:X", "--engine", "test", "--iterations", "1",
                                 "--out", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 3 and "soak[adb]" in res.stderr
    res = _soak_without_adbutils("run", "--demo", "--iterations", "3", "--quiet", "--out", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def adb_servers() -> set[int]:
    """Pids of adb server processes on this machine (every namespace)."""
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"adb" and b"fork-server" in argv:
            out.add(int(pid))
    return out


def test_devices_leaves_no_adb_server_running(soak, phone, lab):
    before = adb_servers()
    assert soak("devices", "--json").returncode == 0  # the lab's server, which soak did not start
    nobody = subprocess.run(lab.cmd([sys.executable, "-m", "soak", "devices"]), cwd=REPO, capture_output=True,
                            text=True, timeout=120, env=lab.env({"ANDROID_ADB_SERVER_PORT": "5999"}))
    assert nobody.returncode == 9 and "adb server" in nobody.stderr  # no server there: said, not started
    assert adb_servers() == before

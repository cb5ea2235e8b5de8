"""The unit/integration split of tests/conftest.py names files and tests that exist, and its guard
sees a unit test start a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _conftest():
    (mod,) = [m for m in list(sys.modules.values())
              if getattr(m, "__file__", None) and Path(m.__file__).resolve() == ROOT / "tests" / "conftest.py"]
    return mod


def test_every_listed_file_and_test_exists():
    conf = _conftest()
    missing = [f for f in conf.UNIT_FILES if not (ROOT / f).is_file()]
    for entry in conf.INTEGRATION:
        path, name = entry.split("::")
        if path not in conf.UNIT_FILES or f"def {name}(" not in (ROOT / path).read_text():
            missing.append(entry)
    assert not missing, f"tests/conftest.py lists what is not there (renamed or removed?): {missing}"


@pytest.mark.integration  # it starts a process on purpose
def test_the_guard_sees_a_process_start():
    conf = _conftest()
    conf._started = []
    try:
        subprocess.run(["true"], check=True)
        seen = list(conf._started)
    finally:
        conf._started = None
    assert seen and seen[0].startswith("subprocess.Popen")

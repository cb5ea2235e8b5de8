"""soak-runner builds standalone for a 64-bit ARM target (the phones' ABI),
warning-free, from native/runner/CMakeLists.txt alone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from soak.engine.loader import elf_machine

RUNNER_SRC = Path(__file__).resolve().parents[2] / "native" / "runner"


def test_runner_cross_builds_for_aarch64(tmp_path):
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.fail("aarch64-linux-gnu-gcc missing: install gcc-aarch64-linux-gnu (.ci/setup does)")
    build = tmp_path / "build"
    configure = subprocess.run(
        ["cmake", "-S", str(RUNNER_SRC), "-B", str(build), f"-DCMAKE_C_COMPILER={cc}",
         "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64", "-DCMAKE_C_FLAGS=-Werror"],
        capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    made = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    assert elf_machine(build / "soak-runner") == "aarch64"

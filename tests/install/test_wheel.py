"""A built wheel works on its own: installed into a fresh venv outside the checkout, it
carries the fault catalog and the native sources (issue 15), so the demo, a catalog
command and the interposer build run from there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("wheel-build")
    # --no-build-isolation: setuptools is already here, and the build needs no network
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True, timeout=600, cwd=build,
                   env={**os.environ, "PIP_NO_INDEX": "1"})
    wheels = list(out.glob("soak-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv outside the checkout.  Its dependencies come from this interpreter's
    site-packages (tests send no traffic off the machine); soak itself only from the wheel."""
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True, timeout=300)
    py = root / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    return root


def _run(venv: Path, tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SOAK_CATALOG")}
    env["SOAK_CACHE_DIR"] = str(tmp_path / "cache")  # build the native parts from the wheel's sources
    return subprocess.run([str(venv / "bin" / "soak"), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_wheel_carries_catalog_and_native_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("soak/native/include/soak_engine.h", "soak/native/test_engine/CMakeLists.txt",
                     "soak/native/interposer/gen_wrappers.py", "soak/native/runner/main.c",
                     "soak/models/qwen2-tiny/config.json"):
        assert required in names, required
    catalog = [n for n in names if n.startswith("soak/fault_catalog/") and n.endswith(".yaml")]
    assert len(catalog) == len(list((REPO / "fault_catalog").glob("*.yaml")))


def test_installed_soak_is_the_wheel(venv, tmp_path):
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import soak; print(soak.__file__)"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(venv), out.stdout


def test_catalog_command_from_wheel(venv, tmp_path):
    proc = _run(venv, tmp_path, "catalog", "validate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run(venv, tmp_path, "catalog", "list")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mnn-" in proc.stdout or "soak-" in proc.stdout


def test_demo_from_wheel(venv, tmp_path):
    proc = _run(venv, tmp_path, "run", "--demo", "--quiet", "--out", str(tmp_path / "logs"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = list((tmp_path / "logs").iterdir())
    assert len(runs) == 1 and (runs[0] / "events.jsonl").stat().st_size > 0
    assert list((tmp_path / "cache" / "native").glob("soak_test_engine-*")), "test engine not built from the wheel"


def test_interposer_builds_from_wheel(venv, tmp_path):
    proc = _run(venv, tmp_path, "cl-info", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "soak: building native/interposer (first use" in proc.stderr  # not silent while it builds
    json.loads(proc.stdout)  # and stdout stays JSON
    assert list((tmp_path / "cache" / "native").glob("soak_interposer-*")), "interposer not built from the wheel"

"""Fixtures for the adb tests: a lab of real adbd "phones" (see fakedevice/lab.py).

The lab needs root, adbd/adb from bookworm-backports (.ci/apt-backports.sh),
unshare/nsenter and a C compiler.  Without them the tests fail with the
list of what is missing: they never skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakedevice.lab import Lab  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    from soak.native_build import ensure_built

    ensure_built("soak-runner")  # build outside the timed soaks
    ensure_built("soak_test_engine")
    with Lab(tmp_path_factory.mktemp("adblab")) as the_lab:
        yield the_lab


@pytest.fixture(scope="session")
def phone(lab):
    """A device that no test disconnects or reboots."""
    return lab.add_device("steady")


@pytest.fixture
def fresh_phone(lab, request):
    """A device of its own, for tests that break it."""
    return lab.add_device(f"t{len(lab.devices)}-{request.node.name[:20]}")


class Soak:
    """`python -m soak ...` inside the lab's network namespace."""

    def __init__(self, lab: Lab, out: Path):
        self.lab = lab
        self.out = out

    def argv(self, *args: str) -> list[str]:
        return self.lab.cmd([sys.executable, "-m", "soak", *args])

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.lab.env(), cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.lab.env(), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def plan(self, name: str, faults: list[dict]) -> str:
        path = self.out / f"{name}.json"
        path.write_text(json.dumps(faults))
        return str(path)


@pytest.fixture
def soak(lab, tmp_path):
    return Soak(lab, tmp_path)

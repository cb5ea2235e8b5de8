"""Fixtures for tests that need a hand-built MNN (SOAK_MNN_BUILD, SOAK_MNN_SOURCE).

Tests marked `mnn_native` skip when SOAK_MNN_BUILD is unset: that is the only
skip soak's rules allow.  With it set, everything here must work or fail.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("_drive.py")
MARK = "\x1esoak-step"

needs_mnn = pytest.mark.skipif(not os.environ.get("SOAK_MNN_BUILD"),
                               reason="needs a hand-built MNN: set SOAK_MNN_BUILD (and SOAK_MNN_SOURCE)")


def find_tiny_model() -> Path:
    """The committed tiny Qwen2 model (soak/models/...), or SOAK_MNN_TEST_MODEL."""
    env = os.environ.get("SOAK_MNN_TEST_MODEL")
    if env:
        return Path(env)
    found = sorted((REPO / "soak" / "models").glob("**/config.json"))
    if not found:
        raise AssertionError("no committed tiny model under soak/models/ (config.json); "
                             "set SOAK_MNN_TEST_MODEL=<model>/config.json")
    # Prefer the valid-UTF-8 variant over the raw-bytes one.
    plain = [p for p in found if "raw" not in str(p.relative_to(REPO))]
    return (plain or found)[0]


@dataclass
class DriveResult:
    returncode: int
    steps: list[dict]
    log: str

    def step_log(self, n: int) -> str:
        """Lines MNN printed during step n."""
        start = self.log.find(f"{MARK} {n} ")
        if start < 0:
            return ""
        start = self.log.find("\n", start) + 1
        end = self.log.find(MARK, start)
        return self.log[start:end if end >= 0 else len(self.log)]

    def output(self, n: int) -> bytes:
        return base64.b64decode(self.steps[n].get("output_b64", ""))


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def drive(tmp_path: Path, shim: Path, steps: list[dict], plugins: list[Path] = (), env: dict | None = None,
          timeout: float = 300, cwd: Path | None = None) -> DriveResult:
    plan = tmp_path / "plan.json"
    out = tmp_path / "results.json"
    plan.write_text(json.dumps({"shim": str(shim), "plugins": [str(p) for p in plugins], "steps": steps}))
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(DRIVER), str(plan), str(out)], cwd=cwd or tmp_path,
                          env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    steps_done = json.loads(out.read_text()) if out.exists() else []
    return DriveResult(proc.returncode, steps_done, proc.stdout.decode(errors="replace"))


@pytest.fixture(scope="session")
def mnn_build():
    from soak.engine import mnn_native

    return mnn_native.locate()


@pytest.fixture(scope="session")
def shim(mnn_build):
    from soak.engine import mnn_native

    return mnn_native.build_shim(mnn_build)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return find_tiny_model()


@pytest.fixture
def run_steps(tmp_path):
    """run_steps(shim, steps, plugins=(), env=None, timeout=300, cwd=None) -> DriveResult."""

    def _run(shim_path, steps, plugins=(), env=None, timeout=300, cwd=None):
        return drive(tmp_path, shim_path, steps, plugins, env, timeout, cwd)

    return _run


@pytest.fixture
def enc():
    """Prompt text/bytes -> base64 for a respond step."""
    return b64


@pytest.fixture(scope="session")
def pocl_caches():
    """MNN's and PoCL's kernel caches, kept under the soak cache folder (later runs are warm)."""
    from soak.native_build import cache_root

    root = cache_root() / "mnn-test-kernels"
    (root / "mnn").mkdir(parents=True, exist_ok=True)
    (root / "pocl").mkdir(parents=True, exist_ok=True)
    return root

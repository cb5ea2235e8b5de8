"""Fixtures for tests/outputs: synthetic run folders and real test-engine runs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the _helpers beside the tests (as tests/catalog, core, adb)

import _synthrun as synthrun  # noqa: E402


@pytest.fixture
def make_run(tmp_path):
    """make_run(name, **kwargs) -> run folder written by _synthrun.write_run."""
    def make(name: str = "run", **kwargs) -> Path:
        return synthrun.write_run(tmp_path / name, **kwargs)
    return make


@pytest.fixture(scope="session")
def engine_runs(tmp_path_factory):
    """Real runs of the fault-injecting test engine, made once per session."""
    from soak.loop.config import RunConfig
    from soak.judges import run_judged

    root = tmp_path_factory.mktemp("engine-runs")
    made: dict[str, Path] = {}

    def get(name: str, plan: list, iterations: int = 20, seed: int = 3, backend: str = "cpu", **extra) -> Path:
        if name not in made:
            cfg = RunConfig(engine="test", iterations=iterations, seed=seed, out_dir=str(root), run_id=name,
                            fault_plan=plan, max_new_tokens=16, quiet=True, backend=backend,
                            argv=["pytest", name], **extra)
            made[name] = Path(run_judged(cfg).run_dir)  # the loop and its judges, as `soak run`
        return made[name]
    return get


@pytest.fixture
def keep_artifact():
    """keep_artifact(path): copy a test artifact to $SOAK_ARTIFACTS (CI keeps logs/artifacts/)."""
    def keep(path: Path) -> None:
        dest = os.environ.get("SOAK_ARTIFACTS")
        if dest:
            Path(dest).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, Path(dest) / path.name)
    return keep


MIB = synthrun.MIB

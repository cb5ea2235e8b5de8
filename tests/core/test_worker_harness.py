"""The worker is the soak that started it; a worker that cannot start is soak's
error (HarnessError, exit 12), never an engine crash (issue 17)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from coresupport import soak_cli
from soak import __version__, errors
from soak.run_folder import read_events
from soak.loop.config import RunConfig
from soak.loop.runner import run_soak
from soak.targets.local import LocalTarget
from soak.worker.protocol import package_dir

REPO = Path(__file__).resolve().parents[2]

FAKE_WORKER = """
import json, os, sys
def main():
    print(json.dumps({"op": "hello", "protocol": %(protocol)s, "pid": os.getpid(), "runner": "python",
                      "version": "9.9.9", "package": os.path.dirname(os.path.dirname(__file__))}), flush=True)
    for line in sys.stdin:
        pass
    return 0
"""


def fake_soak(root: Path, worker: str | None, version: str = "9.9.9") -> Path:
    """An installed-looking soak package under root: worker=None has no soak.worker at all
    (a stale install whose files are gone), else soak/worker/main.py holds `worker`."""
    pkg = root / "soak"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f'__version__ = "{version}"\n')
    if worker is not None:
        (pkg / "worker").mkdir()
        (pkg / "worker" / "__init__.py").write_text("")
        (pkg / "worker" / "main.py").write_text(worker)
        (pkg / "worker" / "__main__.py").write_text("from soak.worker.main import main\nraise SystemExit(main())\n")
    return root


def test_worker_reports_the_package_the_supervisor_runs(tmp_path):
    cfg = RunConfig(engine="test", iterations=2, out_dir=str(tmp_path), run_id="own", quiet=True)
    result = run_soak(cfg)
    (start,) = [e for e in read_events(result.run_dir) if e["event"] == "worker_start"]
    assert start["version"] == __version__ and start["runner"] == "python"
    assert package_dir() == str(REPO / "soak")


@pytest.mark.parametrize("installed", ["broken", "different"])
def test_a_checkout_runs_its_own_worker_next_to_another_installed_soak(tmp_path, installed):
    """PYTHONPATH puts another soak before the checkout's for any process started elsewhere:
    `python -m soak.worker` in the run folder would import it.  The checkout's run must not."""
    site = fake_soak(tmp_path / "site", None if installed == "broken" else FAKE_WORKER % {"protocol": 1})
    proc = soak_cli("run", "--engine", "test", "--iterations", "4", "--out", str(tmp_path / "logs"),
                    "--run-id", "r", "--quiet", cwd=REPO, env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    events = list(read_events(tmp_path / "logs" / "r"))
    assert [e["version"] for e in events if e["event"] == "worker_start"] == [__version__]
    assert not [e for e in events if e["event"] == "fault"]
    assert sum(e["event"] == "iteration" for e in events) == 4


def _refused(tmp_path, target) -> tuple[errors.HarnessError, list[dict], dict]:
    cfg = RunConfig(engine="test", iterations=3, out_dir=str(tmp_path), run_id="h", quiet=True)
    with pytest.raises(errors.HarnessError) as info:
        run_soak(cfg, target=target)
    run_dir = tmp_path / "h"
    events = list(read_events(run_dir))
    # soak's problem: no engine fault, no recovery ladder, one worker start attempt
    assert not [e for e in events if e["event"] in ("fault", "recovery", "worker_start", "load", "iteration")]
    (error,) = [e for e in events if e["event"] == "error"]
    assert error["kind"] == "harness" and error["exit_code"] == 12
    assert events[-1]["event"] == "run_end" and events[-1]["reason"] == "harness_error"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["faults"] == 0 and summary["recovery"]["attempts"] == 0
    assert "\n" not in info.value.message
    return info.value, events, summary


def test_a_worker_from_another_soak_is_refused(tmp_path):
    site = fake_soak(tmp_path / "site", FAKE_WORKER % {"protocol": 1})
    exc, _, _ = _refused(tmp_path, LocalTarget(package_root=site))
    assert "9.9.9" in exc.message and str(site / "soak") in exc.message
    assert f"not this soak {__version__} from {REPO / 'soak'}" in exc.message


def test_a_worker_speaking_another_protocol_is_refused(tmp_path):
    site = fake_soak(tmp_path / "site", FAKE_WORKER % {"protocol": 99})
    exc, _, _ = _refused(tmp_path, LocalTarget(package_root=site))
    assert "worker protocol 99" in exc.message


def test_a_worker_that_cannot_import_is_a_harness_error(tmp_path):
    site = fake_soak(tmp_path / "site", "import soak_missing_dependency\n")
    exc, _, _ = _refused(tmp_path, LocalTarget(package_root=site))
    assert "No module named 'soak_missing_dependency'" in exc.message
    assert "pip install -e" in exc.hint


def test_a_missing_interpreter_is_a_harness_error(tmp_path):
    exc, _, _ = _refused(tmp_path, LocalTarget(python=str(tmp_path / "no-such-python3")))
    assert "no-such-python3" in exc.message


def test_cli_one_line_message_and_exit_12_when_the_checkout_worker_cannot_import(tmp_path):
    """The whole command, from a copy of the checkout whose worker has a missing dependency."""
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "soak", copy / "soak", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "native").symlink_to(REPO / "native")
    main = copy / "soak" / "worker" / "main.py"
    main.write_text(main.read_text().replace("import ctypes\n", "import ctypes\nimport soak_missing_dependency\n", 1))
    proc = soak_cli("run", "--engine", "test", "--iterations", "3", "--out", str(tmp_path / "logs"),
                    "--run-id", "r", "--quiet", cwd=copy)
    assert proc.returncode == 12, proc.stderr
    first, hint = proc.stderr.strip().splitlines()
    assert first.startswith("soak: error: soak's worker did not start: it exited (1): ModuleNotFoundError")
    assert hint.startswith("  hint: run `") and str(copy) in hint and "Traceback" not in proc.stderr
    kinds = [e["event"] for e in read_events(tmp_path / "logs" / "r")]
    assert "fault" not in kinds and "recovery" not in kinds and kinds[-1] == "run_end"

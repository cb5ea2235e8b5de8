"""Real runs of the fault-injecting test engine (`soak run --fault-plan`,
`soak run --demo`): each injected fault kind is classified to the right
catalog entry, by `soak run` itself and by `soak classify` afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from soak.cli import main

PLAN = [
    {"kind": "cpu_fallback"},
    {"kind": "leak", "from": 0, "bytes": 1048576},
    {"kind": "cl_error", "at": [3], "code": -5, "info": "run3d"},
    {"kind": "cl_error", "at": [5], "code": -36, "info": "Raster", "repeat": 40, "corrupt": True},
    {"kind": "cl_error", "at": [7], "code": -9999, "info": "clEvent", "repeat": 2},
    {"kind": "kv_map_error", "at": [9]},
    {"kind": "sticky_error", "at": [12]},
    {"kind": "crash", "at": [15], "signal": "segv"},
    {"kind": "crash", "at": [17], "signal": "abort"},
    {"kind": "hang", "at": [19], "seconds": 30},
    {"kind": "invalid_utf8", "at": [2]},
    {"kind": "repeat", "at": [23]},
    {"kind": "empty", "at": [25]},
    {"kind": "slow", "from": 27, "until": 29, "factor": 30},
    {"kind": "log", "at": [31], "lines": ["Build program failed, err:-11 ! ",
                                          "programName.c_str()=s buffer_to_image in buildKernelWithCache, 652 "]},
    {"kind": "log", "at": [33], "line": "Alloc Buffer 1048576 error, code:-4 "},
]

# (kind, a text in the signature or None, first iteration, the entry it must match, known fault?)
EXPECTED = [
    ("cpu_fallback", None, 0, "soak-cpu-fallback", True),
    ("cl_error", "CL_OUT_OF_RESOURCES info:run3d", 3, "soak-out-of-resources", True),
    ("cl_error", "CL_INVALID_COMMAND_QUEUE info:Raster", 5, "soak-dead-queue-flood", True),
    ("bad_output", "repetition", 5, "soak-output-repetition", True),
    ("cl_error", "CL_NV_INVALID_MEM_ACCESS info:clEvent", 7, "soak-nvidia-illegal-memory-access", True),
    ("error_line", "Map error key_ptr", 9, "soak-kv-cache-growth-failure", True),
    ("error_line", "onForward returned no outputs", 9, "soak-onforward-no-outputs", True),
    ("status_error", "INTERNAL_ERROR", 9, "soak-sticky-error-state", True),
    ("crash", "SIGSEGV", 15, "soak-crash", False),
    ("crash", "SIGABRT", 17, "soak-crash", False),
    ("hang", None, 19, "soak-hang", False),
    ("bad_output", "invalid_utf8", 2, "soak-output-garbage", True),
    ("bad_output", "empty", 25, "soak-output-empty", True),
    ("slowdown", None, 27, "soak-slowdown", False),
    ("error_line", "Build program failed", 31, "soak-kernel-build-failure", True),
    ("error_line", "Alloc Buffer", 33, "soak-load-alloc-failure", True),
]


def _soak(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soak", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240)


@pytest.fixture(scope="module")
def planned_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("e2e")
    (d / "plan.json").write_text(json.dumps(PLAN))
    proc = _soak("run", "--engine", "test", "--backend", "opencl", "--fault-plan", str(d / "plan.json"),
                 "--iterations", "40", "--timeout-respond", "2", "--seed", "3", "--quiet",
                 "--out", str(d / "logs"), cwd=d)
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in (d / "logs").iterdir() if p.is_dir()]
    return run


def _find(findings, kind, text, first):
    # a slowdown is judged against a timing baseline: on a loaded machine it may show earlier or later
    slack = 10 if kind == "slowdown" else 3
    for f in findings:
        if f["kind"] == kind and (text is None or text in f["signature_text"]) and \
                f["first_iteration"] is not None and first - slack <= f["first_iteration"] <= first + slack:
            return f
    raise AssertionError(f"no {kind} {text!r} near iteration {first}: "
                         + "; ".join(f"{f['kind']}@{f['first_iteration']} {f['signature_text']}" for f in findings))


@pytest.mark.parametrize("kind,text,first,entry,known", EXPECTED, ids=[f"{e[0]}-{e[3]}" for e in EXPECTED])
def test_injected_fault_is_classified(planned_run, kind, text, first, entry, known):
    result = json.loads((planned_run / "classification.json").read_text())  # written by `soak run`
    f = _find(result["findings"], kind, text, first)
    assert entry in [m["id"] for m in f["matches"]], f["matches"]
    assert f["known"] is known
    if known:
        assert f["fault_id"] == entry
    else:
        assert f["fault_id"] is None and f["signature"].startswith("sig-")


def test_leak_classified_from_the_runs_verdicts(planned_run):
    """1 MiB leaked per call; the worker restarts 3 times.  `soak classify`
    after the run reads the memory verdict of verdicts.json."""
    assert main(["classify", "--json", str(planned_run)]) == 0
    result = json.loads((planned_run / "classification.json").read_text())
    (f,) = [f for f in result["findings"] if f["kind"] == "memory_growth"]
    assert f["fault_id"] == "soak-host-memory-leak" and f["signature_text"] == "memory_growth/?: host"


def test_two_crashes_keep_distinct_signatures(planned_run):
    result = json.loads((planned_run / "classification.json").read_text())
    crashes = [f for f in result["findings"] if f["kind"] == "crash"]
    assert len({f["signature"] for f in crashes}) == len(crashes) == 2


def test_soak_classify_agrees_with_the_run(planned_run, capsys):
    before = json.loads((planned_run / "classification.json").read_text())
    assert main(["classify", str(planned_run)]) == 0
    out = capsys.readouterr().out
    assert "soak-dead-queue-flood" in out and "near misses" in out and "written:" in out
    after = json.loads((planned_run / "classification.json").read_text())
    assert {f["signature"] for f in before["findings"]} <= {f["signature"] for f in after["findings"]}


def test_demo_run_every_fault_kind_classified(tmp_path):
    proc = _soak("run", "--demo", "--quiet", "--out", str(tmp_path / "logs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in (tmp_path / "logs").iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    result = json.loads((run / "classification.json").read_text())
    kinds = {f["kind"] for f in result["findings"]}
    by_kind = summary.get("faults_by_kind") or summary.get("fault_kinds") or {}
    assert set(by_kind) <= kinds | {"engine_error"}, (by_kind, kinds)
    for f in result["findings"]:
        assert f["matches"], f  # every demo fault matches at least a generic entry
    ids = {f["fault_id"] for f in result["findings"]}
    assert {"soak-cpu-fallback", "soak-kv-cache-growth-failure", "soak-dead-queue-flood"} <= ids

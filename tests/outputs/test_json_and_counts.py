"""Issue 15: `--json` prints JSON alone on stdout (people text on stderr, gate table
included, nothing at all under --quiet) for every command that has it; and one count of
faults (soak.fault_kinds.fault_kind_of) in the live progress, summary.json, the
classification and the gate on one demo run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "docs" / "policies" / "opencl-nightly.toml"


def soak(*args, cwd, check_json=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    out = subprocess.run([sys.executable, "-m", "soak", *map(str, args)], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=300)
    data = json.loads(out.stdout) if check_json else None  # the whole of stdout is one JSON document
    return out, data


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("json")
    out, summary = soak("run", "--demo", "--json", "--gate", POLICY, "--out", tmp, "--run-id", "demo", cwd=tmp)
    return tmp, out, summary


def test_run_json_is_alone_on_stdout_and_the_gate_table_on_stderr(demo):
    tmp, out, summary = demo
    assert out.returncode == 1  # the nightly policy fails the demo (critical faults)
    assert summary["run_id"] == "demo" and summary["seed"] == 0
    assert "soak gate: demo: FAILED" in out.stderr and "soak run summary" in out.stderr
    assert "soak run demo  seed 0" in out.stderr


def test_quiet_json_run_prints_nothing_but_json(tmp_path):
    out, summary = soak("run", "--demo", "--iterations", "20", "--json", "--quiet", "--gate", POLICY,
                        "--out", tmp_path, cwd=tmp_path)
    assert out.stderr == "" and summary["iterations"] == 20


def test_every_json_command_prints_json_only(demo, tmp_path):
    tmp, _, _ = demo
    run = tmp / "demo"
    _, gate = soak("gate", run, "--json", cwd=tmp)
    assert gate["run_id"] == "demo" and gate["passed"] is False
    _, cls = soak("classify", run, "--json", cwd=tmp)
    assert cls["run_id"] == "demo"
    _, entries = soak("catalog", "list", "--json", cwd=tmp)
    _, entry = soak("catalog", "show", entries[0]["id"], "--json", cwd=tmp)
    assert entry["id"] == entries[0]["id"]
    db = tmp_path / "h.sqlite"
    soak("history", "--db", db, "--json", "add", run, cwd=tmp)
    _, new = soak("history", "--db", db, "--json", "new", cwd=tmp)
    assert isinstance(new, (dict, list))
    out, verdict = soak("replay", run, "-i", "19", "--out", tmp_path / "replays", "--json", cwd=tmp)
    assert verdict["iteration"] == 19 and verdict["reproduced"] is True
    out, result = soak("compare", "--demo", "--iterations", "6", "--backends", "cpu,opencl", "--json",
                       "--out", tmp_path / "cmp", cwd=tmp)
    assert "compare_id" in result


def test_one_count_of_faults_everywhere(demo):
    tmp, out, summary = demo
    run = tmp / "demo"
    from soak.run_folder import read_events
    from soak.fault_kinds import count_faults

    events = list(read_events(run))
    n = count_faults(events)
    assert n == summary["faults"] == sum(summary["faults_by_kind"].values())
    assert n > 10
    live = re.findall(r"^iter \d+/\d+ .*?faults (\d+)", out.stderr, re.M)
    assert int(live[-1]) == n  # the last progress line
    cls = json.loads((run / "classification.json").read_text())
    from soak.fault_kinds import OWN_VERDICT_KINDS

    assert sum(f["events"] for f in cls["findings"] if f["kind"] not in OWN_VERDICT_KINDS) == n
    policy = tmp / "count.toml"
    policy.write_text("[errors]\nmax_count = 0\n")
    _, gate = soak("gate", run, "--policy", policy, "--json", cwd=tmp)
    (rule,) = [r for r in gate["rules"] if r["name"] == "errors.total"]
    assert re.match(rf"faults not allowed as known: {n} > max_count 0", rule["message"]), rule

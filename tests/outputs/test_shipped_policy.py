"""The policy the README ships gates a demo run, failing for the demo's real faults."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

POLICY = Path(__file__).resolve().parents[2] / "docs" / "policies" / "opencl-nightly.toml"


def soak(*args):
    return subprocess.run([sys.executable, "-m", "soak", *args], capture_output=True, text=True, timeout=300)


def test_readme_policy_fails_the_demo_for_the_right_reasons(tmp_path):
    junit = tmp_path / "junit.xml"
    run = soak("run", "--demo", "--out", str(tmp_path), "--run-id", "demo", "--quiet",
               "--gate", str(POLICY))
    assert run.returncode == 1, run.stderr  # the run itself succeeded; the gate failed it
    gate = soak("gate", str(tmp_path / "demo"), "--policy", str(POLICY), "--junit", str(junit), "--json")
    assert gate.returncode == 1
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    failed = {name for name, c in cases.items() if c.find("failure") is not None}
    assert {"backend.required", "errors.severity.critical"} <= failed
    assert "run.min_iterations" not in failed

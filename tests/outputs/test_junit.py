"""JUnit XML: well-formed, one test case per rule, failures say why."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from soak.cli import main
from soak.errors import ExitCode
from soak.outputs.gate import RuleResult
from soak.outputs.junit import write_junit


def test_structure(tmp_path):
    results = [RuleResult("errors.total", False, "faults not allowed as known: 4 > max_count 0",
                          ["soak-out-of-resources [high] x3", "bad \x00\x07 chars <&> kept out"]),
               RuleResult("memory.leak.rss", True, "rss: stable"),
               RuleResult("recovery.rate", True, "no recovery attempt was needed")]
    path = write_junit(results, tmp_path / "j.xml", "nightly", "run-1")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "nightly" and suite.get("tests") == "3" and suite.get("failures") == "1"
    assert suite.get("errors") == "0" and suite.get("timestamp")
    assert suite.find("properties/property[@name='run_id']").get("value") == "run-1"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["errors.total", "memory.leak.rss", "recovery.rate"]
    assert [c.get("classname") for c in cases] == ["soak.gate.errors", "soak.gate.memory", "soak.gate.recovery"]
    fail = cases[0].find("failure")
    assert fail.get("message") == "faults not allowed as known: 4 > max_count 0"
    assert "soak-out-of-resources [high] x3" in fail.text and "<&>" in fail.text and "\x00" not in fail.text
    assert cases[1].find("failure") is None and cases[2].find("failure") is None


def test_gate_cli_junit_has_one_case_per_rule(make_run, tmp_path):
    run = make_run("faulty", iterations=50, faults={5: "crash"}, recover={5: (None, ["reset", "restart"])})
    policy = tmp_path / "p.toml"
    policy.write_text('[gate]\nname = "ci-opencl"\nrequired_backend = "opencl"\n[errors.severity]\ncritical = { max_count = 0 }\n'
                      '[memory]\nmax_leak_slope = 0\nseries = ["rss"]\n[recovery]\nmin_rate = 1\n')
    junit = tmp_path / "out" / "junit.xml"
    (tmp_path / "out").mkdir()
    assert main(["gate", str(run), "--policy", str(policy), "--junit", str(junit)]) == ExitCode.FAILED
    suite = ET.parse(junit).getroot().find("testsuite")
    names = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(names) == {"backend.required", "errors.severity.critical", "memory.leak.rss", "recovery.rate"}
    assert suite.get("name") == "ci-opencl"
    failed = {n for n, c in names.items() if c.find("failure") is not None}
    assert failed == {"errors.severity.critical", "recovery.rate"}
    assert "critical faults: 1 > max_count 0" in names["errors.severity.critical"].find("failure").get("message")
    assert main(["gate", str(run), "--policy", str(policy), "--junit", str(tmp_path / "nodir" / "j.xml")]) \
        == ExitCode.BAD_INPUT

"""JUnit XML, read back with junitparser: one test case per rule, failures say why,
unjudged rules are skipped (never passed), real times, suite names that do not
collide across runs, and an error case when the gate cannot run."""

from __future__ import annotations

import json

from junitparser import Error, Failure, JUnitXml, Skipped

from soak.cli import main
from soak.errors import ExitCode
from soak.outputs.gate import RuleResult
from soak.outputs.junit import write_junit


def _suite(path):
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1
    return xml, suites[0]


def _kind(case) -> str:
    kinds = {type(r) for r in case.result}
    return "failure" if Failure in kinds else "skipped" if Skipped in kinds else "error" if Error in kinds else "passed"


def test_structure(tmp_path):
    results = [RuleResult("errors.total", False, "faults not allowed as known: 4 > max_count 0",
                          ["soak-out-of-resources [high] x3", "bad \x00\x07 chars <&> kept out"], time_s=0.25),
               RuleResult("memory.leak.rss", True, "rss: stable", time_s=0.5),
               RuleResult("recovery.rate", True, "no recovery attempt was needed", skipped=True)]
    path = write_junit(results, tmp_path / "j.xml", "nightly", "run-1", device="Adreno (TM) 740", model="qwen-0.5b")
    xml, suite = _suite(path)
    assert suite.name == "nightly | run-1 | Adreno (TM) 740 | qwen-0.5b"
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (3, 1, 0, 1)
    assert suite.time == 0.75 and suite.timestamp
    props = {p.name: p.value for p in suite.properties()}
    assert props["run_id"] == "run-1" and props["device"] == "Adreno (TM) 740" and props["model"] == "qwen-0.5b"
    cases = list(suite)
    assert [c.name for c in cases] == ["errors.total", "memory.leak.rss", "recovery.rate"]
    assert [c.classname for c in cases] == ["soak.gate.errors", "soak.gate.memory", "soak.gate.recovery"]
    assert [_kind(c) for c in cases] == ["failure", "passed", "skipped"]
    assert [c.time for c in cases] == [0.25, 0.5, 0.0]
    fail = cases[0].result[0]
    assert fail.message == "faults not allowed as known: 4 > max_count 0"
    assert "soak-out-of-resources [high] x3" in fail.text and "<&>" in fail.text and "\x00" not in fail.text


def test_gate_cli_junit_has_one_case_per_rule(make_run, tmp_path):
    run = make_run("faulty", iterations=50, faults={5: "crash"}, recover={5: (None, ["reset", "restart"])})
    policy = tmp_path / "p.toml"
    policy.write_text('[gate]\nname = "ci-opencl"\nrequired_backend = "opencl"\n[errors.severity]\ncritical = { max_count = 0 }\n'
                      '[memory]\nmax_leak_slope = 0\nseries = ["rss", "gpu_live_bytes"]\n[recovery]\nmin_rate = 1\n')
    junit = tmp_path / "out" / "junit.xml"
    (tmp_path / "out").mkdir()
    assert main(["gate", str(run), "--policy", str(policy), "--junit", str(junit)]) == ExitCode.FAILED
    _, suite = _suite(junit)
    cases = {c.name: c for c in suite}
    assert set(cases) == {"run.complete", "backend.required", "errors.severity.critical", "memory.leak.rss",
                          "memory.leak.gpu_live_bytes", "recovery.rate"}
    assert suite.name.startswith("ci-opencl | faulty | Adreno (TM) 740")
    kinds = {n: _kind(c) for n, c in cases.items()}
    assert kinds == {"run.complete": "passed", "backend.required": "passed", "errors.severity.critical": "failure",
                     "memory.leak.rss": "passed", "memory.leak.gpu_live_bytes": "skipped", "recovery.rate": "failure"}
    assert suite.skipped == 1 and suite.failures == 2
    # the verdicts the memory rules read take time: no rule reports a time of 0 across the board
    assert suite.time > 0 and any(c.time > 0 for c in cases.values())
    assert "critical faults: 1 > max_count 0" in cases["errors.severity.critical"].result[0].message
    assert main(["gate", str(run), "--policy", str(policy), "--junit", str(tmp_path / "nodir" / "j.xml")]) \
        == ExitCode.BAD_INPUT


def test_two_runs_do_not_collide(make_run, tmp_path):
    names = set()
    for rid in ("night-1", "night-2"):
        run = make_run(rid, iterations=30)
        junit = tmp_path / f"{rid}.xml"
        main(["gate", str(run), "--junit", str(junit)])
        names.add(_suite(junit)[1].name)
    assert len(names) == 2


def test_bad_input_still_writes_junit_with_an_error(make_run, tmp_path, capsys):
    run = make_run("ok", iterations=30)
    junit = tmp_path / "bad-policy.xml"
    policy = tmp_path / "p.toml"
    policy.write_text("[errors]\nmax_rate = nan\n")
    assert main(["gate", str(run), "--policy", str(policy), "--junit", str(junit)]) == ExitCode.BAD_INPUT
    _, suite = _suite(junit)
    (case,) = list(suite)
    assert _kind(case) == "error" and suite.errors == 1 and "max_rate" in case.result[0].message
    junit2 = tmp_path / "no-run.xml"
    assert main(["gate", str(tmp_path / "missing"), "--junit", str(junit2)]) == ExitCode.BAD_INPUT
    _, suite = _suite(junit2)
    assert _kind(list(suite)[0]) == "error" and "does not exist" in list(suite)[0].result[0].message
    assert "Traceback" not in capsys.readouterr().err


def test_json_says_skipped(make_run, capsys):
    run = make_run("ok", iterations=30)
    assert main(["gate", str(run), "--json"]) == ExitCode.OK
    rules = {r["name"]: r for r in json.loads(capsys.readouterr().out)["rules"]}
    assert rules["recovery.rate"]["status"] == "skipped" and rules["recovery.rate"]["passed"] is False
    assert rules["run.complete"]["status"] == "passed"

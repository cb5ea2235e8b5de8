"""Expected failures and flakes in the gate (issue 26): a baseline file, a flake list, and
`--rerun-unexpected N` on real test-engine runs: a crash that comes back on replay stays
unexpected and fails the gate; a fault that needs the engine to have run a while (after_s)
does not come back on a fresh replay and is labelled flake.  gate.json, the JUnit, the merge
table and the history carry the labels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from soak import history
from soak.errors import ExitCode

CRASH = {"kind": "crash", "at": [4], "signal": "segv"}
# the KV-cache failure fires only once the engine has run 1 s (a slow iteration 6 makes sure of
# that in the run); a replay of iteration 10's conversation on a fresh engine is over long before
SLOW_THEN_KV = [{"kind": "slow", "at": [6], "factor": 800}, {"kind": "kv_map_error", "at": [10], "after_s": 1.0}]
CRASH_KEY, KV_KEY = "sig-af8e4862aa0c", "soak-kv-cache-growth-failure"


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    from soak.judges import run_judged
    from soak.loop.config import RunConfig

    root = tmp_path_factory.mktemp("expect")
    cfg = RunConfig(engine="test", iterations=12, seed=0, out_dir=str(root / "src"), run_id="night",
                    fault_plan=[CRASH, *SLOW_THEN_KV], max_new_tokens=8, quiet=True, argv=["pytest"])
    run = Path(run_judged(cfg).run_dir)
    keys = {c.get("fault_id") or c["signature"]: c for c in json.loads((run / "classification.json").read_text())["causes"]}
    assert set(keys) == {CRASH_KEY, KV_KEY}, keys
    return root, run


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _soak(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soak", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _cases(junit: Path) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}


def test_a_baseline_makes_known_failures_expected(gated, tmp_path):
    _, src = gated
    run = _copy(src, tmp_path / "run")
    m = json.loads((run / "manifest.json").read_text())
    m.update({"device": {"model": "SM-S911", "serial": "r58"}, "opencl": {"device": "Adreno 740", "driver_version": "512.744"}})
    (run / "manifest.json").write_text(json.dumps(m))
    base = tmp_path / "baseline.toml"
    # without a baseline, the default gate fails on both critical causes
    proc = _soak("gate", str(run), cwd=tmp_path)
    assert proc.returncode == ExitCode.FAILED and "cause." not in proc.stdout
    # the crash expected on this phone's driver, the KV failure a known flake: the gate passes
    base.write_text('[[expected]]\ncause = "sig-af8e*"\ndevice = "SM-S911"\ndriver = "512.7*"\nreason = "MNN#3112"\n'
                    '[[flake]]\ntitle = "KV-cache growth*"\n')
    junit = tmp_path / "j.xml"
    proc = _soak("gate", str(run), "--expectations", str(base), "--junit", str(junit), cwd=tmp_path)
    assert proc.returncode == ExitCode.OK, proc.stdout + proc.stderr
    gate = json.loads((run / "gate.json").read_text())
    assert {c["key"]: (c["label"], c["reason"]) for c in gate["causes"]} == {
        CRASH_KEY: ("expected", "MNN#3112"), KV_KEY: ("flake", "listed in baseline.toml [[flake]] #1")}
    cases = _cases(junit)
    assert cases[f"cause.{CRASH_KEY}"].get("classname") == "soak.gate.cause"
    assert "[expected]" in cases[f"cause.{CRASH_KEY}"].find("system-out").text
    assert "[flake]" in cases[f"cause.{KV_KEY}"].find("system-out").text
    assert cases[f"cause.{KV_KEY}"].find("failure") is None
    # on another driver the crash is not expected: unexpected, and its case fails with the rule
    base.write_text(base.read_text().replace('driver = "512.7*"', 'driver = "600.*"'))
    proc = _soak("gate", str(run), "--expectations", str(base), "--junit", str(junit), cwd=tmp_path)
    assert proc.returncode == ExitCode.FAILED
    cases = _cases(junit)
    assert cases[f"cause.{CRASH_KEY}"].find("failure").get("message").startswith("[unexpected]")
    assert cases["errors.severity.critical"].find("failure") is not None


def test_rerun_unexpected_labels_the_flake_and_keeps_the_real_crash(gated, tmp_path):
    _, src = gated
    logs = tmp_path / "logs"
    run = _copy(src, logs / "night")
    junit = tmp_path / "j.xml"
    proc = _soak("gate", str(run), "--rerun-unexpected", "2", "--junit", str(junit), "--json", cwd=tmp_path)
    assert proc.returncode == ExitCode.FAILED, proc.stderr  # the crash came back: the gate fails on it
    causes = {c["key"]: c for c in json.loads(proc.stdout)["causes"]}
    assert causes[CRASH_KEY]["label"] == "unexpected"
    assert causes[CRASH_KEY]["reruns"]["attempts"] == 1 and causes[CRASH_KEY]["reruns"]["recurred"] == 1
    assert causes[KV_KEY]["label"] == "flake" and causes[KV_KEY]["reason"] == "did not recur in 2 re-run(s)"
    assert causes[KV_KEY]["reruns"]["how"] == "iteration replay"
    for r in causes[KV_KEY]["reruns"]["runs"]:  # the re-runs are run folders inside the run
        assert Path(r).parent == run / "reruns" and (Path(r) / "events.jsonl").is_file()
    assert "re-run 2/2 of soak-kv-cache-growth-failure: did not come back" in proc.stderr
    cases = _cases(junit)
    assert cases[f"cause.{KV_KEY}"].find("failure") is None
    assert cases[f"cause.{CRASH_KEY}"].find("failure") is not None
    # the critical rule counts the crash only: the flake is not counted against the night
    assert "sig-af8e4862aa0c" in cases["errors.severity.critical"].find("failure").text
    assert KV_KEY not in cases["errors.severity.critical"].find("failure").text

    # the merge table carries the labels (and does not take the re-runs for runs of the night)
    proc = _soak("merge", str(logs), "-o", str(tmp_path / "night"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = json.loads((tmp_path / "night" / "merge.json").read_text())
    assert table["totals"]["runs"] == 1
    assert {f["fault"]: f["labels"] for f in table["faults"]} == {CRASH_KEY: {"unexpected": 1}, KV_KEY: {"flake": 1}}
    assert "known (flake ×1)" in proc.stdout
    assert "label-flake" in (tmp_path / "night" / "report.html").read_text()
    merged = {c.get("name") for c in ET.parse(tmp_path / "night" / "junit.xml").getroot().iter("testcase")}
    assert f"cause.{KV_KEY}" in merged

    # the history stores the gate's label; a cause a gate called flake is flaky on the dashboard
    conn = history.connect(tmp_path / "h.sqlite")
    history.add_runs(conn, [run])
    labels = dict(conn.execute("SELECT key, label FROM occurrences").fetchall())
    assert labels == {CRASH_KEY: "unexpected", KV_KEY: "flake"}
    night2 = _copy(run, logs / "night2")
    m = json.loads((night2 / "manifest.json").read_text())
    m.update({"run_id": "night2", "started": "2099-01-02T22:00:00+00:00"})
    (night2 / "manifest.json").write_text(json.dumps(m))
    history.add_runs(conn, [night2])
    status = {c["key"]: c["status"] for c in history.lab(conn)["causes"]}
    assert status[KV_KEY] == "flaky" and status[CRASH_KEY] != "flaky"
    conn.close()


def test_bad_baselines_are_bad_input(gated, tmp_path):
    _, src = gated
    run = _copy(src, tmp_path / "run")
    for text, says in (("[[expected]]\nreason = 'no cause'\n", "needs `cause`"),
                       ("[[expected]]\ncause = 3\n", "`cause` must be a string"),
                       ("[[expectd]]\ncause = 'x'\n", "unknown section"),
                       ("[[flake]]\ncause = 'x'\ncolour = 'red'\n", "unknown key"),
                       ("[[flake]\n", "not valid TOML")):
        base = tmp_path / "b.toml"
        base.write_text(text)
        proc = _soak("gate", str(run), "--expectations", str(base), "--junit", str(tmp_path / "e.xml"), cwd=tmp_path)
        assert proc.returncode == ExitCode.BAD_INPUT and says in proc.stderr, (text, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert ET.parse(tmp_path / "e.xml").getroot().find(".//error") is not None
    proc = _soak("gate", str(run), "--expectations", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert proc.returncode == ExitCode.BAD_INPUT and "does not exist" in proc.stderr
    proc = _soak("gate", str(run), "--rerun-unexpected", "-1", cwd=tmp_path)
    assert proc.returncode == ExitCode.BAD_INPUT and "--rerun-unexpected" in proc.stderr


def test_a_single_cause_replay_is_used_where_it_exists(gated, tmp_path, monkeypatch):
    """The seam for `soak repro`: when soak.repro has replay_cause, the re-runs go through it."""
    import types

    from soak import rerun

    calls = []

    def replay_cause(run_dir, cause, out_dir):
        calls.append(cause.get("fault_id") or cause["signature"])
        return {"recurred": False, "run_dir": str(out_dir / "x")}

    fake = types.ModuleType("soak.repro")
    fake.replay_cause = replay_cause
    monkeypatch.setitem(sys.modules, "soak.repro", fake)
    monkeypatch.setattr(rerun.importlib.util, "find_spec", lambda name: object())
    _, src = gated
    causes = rerun.rerun_unexpected(_copy(src, tmp_path / "run"), None, 3)
    assert sorted(calls) == sorted([CRASH_KEY, KV_KEY] * 3)
    assert {c["key"]: (c["label"], c["reruns"]["how"]) for c in causes} == {
        CRASH_KEY: ("flake", "repro"), KV_KEY: ("flake", "repro")}


def test_soak_run_gate_with_expectations(tmp_path):
    """`soak run --gate POLICY --expectations FILE` (the CI template's command): the listed causes
    pass the gate, labelled; without --gate the options are bad input before any run."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([CRASH]))
    base = tmp_path / "lab.toml"
    base.write_text(f'[[expected]]\ncause = "{CRASH_KEY}"\nreason = "known crash"\n')
    common = ["run", "--engine", "test", "--iterations", "8", "--max-new-tokens", "8", "--quiet", "--out",
              str(tmp_path / "logs"), "--fault-plan", str(plan)]
    proc = _soak(*common, "--run-id", "plain", "--gate", str(tmp_path / "p.toml"), cwd=tmp_path)
    assert proc.returncode == ExitCode.BAD_INPUT  # no such policy: refused before the run
    (tmp_path / "p.toml").write_text("[errors.severity]\ncritical = { max_count = 0 }\n")
    proc = _soak(*common, "--run-id", "plain", "--gate", str(tmp_path / "p.toml"), cwd=tmp_path)
    assert proc.returncode == ExitCode.FAILED, proc.stderr
    proc = _soak(*common, "--run-id", "known", "--gate", str(tmp_path / "p.toml"), "--expectations", str(base),
                 cwd=tmp_path)
    assert proc.returncode == ExitCode.OK, proc.stderr
    gate = json.loads((tmp_path / "logs" / "known" / "gate.json").read_text())
    assert [(c["key"], c["label"], c["reason"]) for c in gate["causes"]] == [(CRASH_KEY, "expected", "known crash")]
    proc = _soak("run", "--engine", "test", "--iterations", "2", "--expectations", str(base), cwd=tmp_path)
    assert proc.returncode == ExitCode.BAD_INPUT and "add --gate" in proc.stderr

"""`soak merge` (issue 16): real test-engine runs, copied as if they ran on several phones, merged
into one table (each finding once, per-device counts), one HTML report and one JUnit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from soak.cli import main
from soak.run_folder import CLASSIFICATION, MERGE_TABLE

CRASH = [{"kind": "crash", "at": [4], "signal": "segv"}]
STORM = [{"kind": "cl_error", "at": [3], "code": -5, "info": "Raster", "repeat": 6}]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from soak.judges import run_judged
    from soak.loop.config import RunConfig

    root = tmp_path_factory.mktemp("merge-src")
    out = {}
    for name, plan in (("clean", []), ("crash", CRASH), ("storm", STORM)):
        cfg = RunConfig(engine="test", iterations=10, seed=3, out_dir=str(root), run_id=name, fault_plan=plan,
                        max_new_tokens=8, quiet=True, argv=["pytest", name])
        out[name] = Path(run_judged(cfg).run_dir)  # classified at the run's end, as `soak run` does
    return out


def _on(src: Path, dest: Path, model: str, serial: str, run_id: str | None = None) -> Path:
    """A real run as if it ran on another phone: only the manifest's device changes."""
    shutil.copytree(src, dest)
    m = json.loads((dest / "manifest.json").read_text())
    m.update(run_id=run_id or dest.name, device={"kind": "adb", "model": model, "serial": serial,
                                                 "adb_server": "127.0.0.1:5037"})
    (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def _keys(run: Path) -> dict[str, int]:
    """Root-cause key (catalog id, else signature) -> count, straight from the run's classification.json."""
    out: dict[str, int] = {}
    for f in json.loads((run / "classification.json").read_text())["causes"]:
        key = f["fault_id"] or f["signature"]
        out[key] = out.get(key, 0) + f["count"]
    return out


@pytest.fixture
def night(sources, tmp_path):
    base = tmp_path / "artifacts"
    runs = {
        "a1": _on(sources["clean"], base / "job1" / "a1", "Pixel 8", "P8SERIAL"),
        "a2": _on(sources["crash"], base / "job2" / "a2", "Pixel 8", "P8SERIAL"),
        "b1": _on(sources["crash"], base / "job3" / "b1", "SM-S911", "R58M"),
        "b2": _on(sources["storm"], base / "job4" / "b2", "SM-S911", "R58M"),
    }
    return base, runs


def test_each_finding_once_with_per_device_counts(night, tmp_path, capsys):
    base, runs = night
    assert main(["merge", str(base), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    table = json.loads((tmp_path / "out" / MERGE_TABLE).read_text())
    assert table["totals"]["runs"] == 4 and table["totals"]["devices"] == 2
    # merge's table has its own name: a run's classification.json is another table
    assert MERGE_TABLE != CLASSIFICATION and not (tmp_path / "out" / CLASSIFICATION).exists()
    expected: dict[str, dict[str, dict]] = {}
    for run in runs.values():
        serial = json.loads((run / "manifest.json").read_text())["device"]["serial"]
        for key, count in _keys(run).items():
            per = expected.setdefault(key, {}).setdefault(serial, {"count": 0, "runs": 0})
            per["count"] += count
            per["runs"] += 1
    assert expected, "the crash and storm runs must have findings"
    got = {f["fault"]: f["devices"] for f in table["faults"]}
    assert got == expected
    assert len(table["faults"]) == len({f["fault"] for f in table["faults"]})
    crash_key = next(iter(set(_keys(runs["a2"])) - set(_keys(runs["a1"]))))
    assert set(got[crash_key]) == {"P8SERIAL", "R58M"}  # the same crash on both phones: one row
    for f in table["faults"]:
        assert f["fault"] in printed
    assert "Pixel 8 P8SERIAL x" in printed and "SM-S911 R58M x" in printed
    assert all(r["classified"] == "run" for r in table["runs"])
    assert {r["run_id"]: r["end_reason"] for r in table["runs"]} == {k: "iterations" for k in runs}


def test_a_run_without_classification_is_classified_and_left_alone(night, tmp_path):
    base, runs = night
    expected = _keys(runs["b2"])
    (runs["b2"] / "classification.json").unlink()
    (runs["a2"] / "summary.json").unlink()  # killed before the summary: the end reason comes from events
    assert main(["merge", str(runs["b2"]), str(runs["a2"]), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    table = json.loads((tmp_path / "out" / MERGE_TABLE).read_text())
    rows = {r["run_id"]: r for r in table["runs"]}
    assert rows["b2"]["classified"] == "merge" and rows["b2"]["findings"] == expected
    assert not (runs["b2"] / "classification.json").exists()
    assert rows["a2"]["end_reason"] == "iterations" and rows["a2"]["iterations"] == 10


def test_junit_one_suite_per_run_from_gate_else_classification(night, tmp_path):
    from soak.outputs.gate import gate_run

    base, runs = night
    policy = tmp_path / "p.toml"
    policy.write_text('[gate]\nname = "nightly"\n[errors.severity]\ncritical = { max_count = 0 }\n')
    passed, _ = gate_run(runs["b1"], str(policy))
    assert not passed  # the crash fails this gate
    _on(runs["a1"], base / "job5" / "a1", "Pixel 8", "P8SERIAL", run_id="a1")  # same run id, same phone, twice
    assert main(["merge", str(base), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    suites = root.findall("testsuite")
    names = [s.get("name") for s in suites]
    assert len(names) == 5 and len(set(names)) == 5
    by_run: dict[str, list] = {}
    for s in suites:
        props = {p.get("name"): p.get("value") for p in s.iter("property")}
        assert props["run_id"] in s.get("name") and props["model"] in s.get("name") and props["serial"] in s.get("name")
        by_run.setdefault(props["run_id"], []).append((props, s))
    props, gated = by_run["b1"][0]
    assert props["source"] == "gate.json"  # the gate's own result file, preferred to its JUnit
    cases = {c.get("name"): c for c in gated.iter("testcase")}
    assert "errors.severity.critical" in cases and cases["errors.severity.critical"].find("failure") is not None
    assert all(c.get("classname").startswith("soak.SM-S911.R58M.gate.") for c in cases.values())
    gate_junit = ET.parse(runs["b1"] / "gate-junit.xml").getroot()
    skipped = {c.get("name") for c in gate_junit.iter("testcase") if c.find("skipped") is not None}
    assert skipped == {n for n, c in cases.items() if c.find("skipped") is not None}  # not judged stays skipped
    props, crashed = by_run["a2"][0]
    assert props["source"] == "classification"
    failing = [c for c in crashed.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failing] == [k for k in _keys(runs["a2"]) if k not in _keys(runs["a1"])]
    _, clean = by_run["a1"][0]
    assert [c.get("name") for c in clean.iter("testcase")] == ["run.ended"]
    assert int(root.get("failures")) == sum(int(s.get("failures")) for s in suites) > 0


def test_html_report_is_one_small_table_document(night, tmp_path):
    base, runs = night
    assert main(["merge", str(base), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    text = (tmp_path / "out" / "report.html").read_text()
    table = json.loads((tmp_path / "out" / MERGE_TABLE).read_text())
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")
    for f in table["faults"]:
        assert f["fault"] in text
    assert "Pixel 8 P8SERIAL" in text and "SM-S911 R58M" in text
    assert "href='../artifacts/job2/a2/'" in text  # links to the run folders, relative
    assert len(text) < 20_000


def test_history_option_adds_every_run(night, tmp_path):
    from soak import history

    base, runs = night
    db = tmp_path / "h.sqlite"
    assert main(["merge", str(base), "-o", str(tmp_path / "out"), "--history", str(db), "--quiet"]) == 0
    conn = history.connect(db)
    stored = {r["run_id"]: (r["device"], r["serial"]) for r in conn.execute("SELECT * FROM runs")}
    found = {f["key"]: f["devices"] for f in history.findings(conn)}
    conn.close()
    assert stored == {"a1": ("Pixel 8", "P8SERIAL"), "a2": ("Pixel 8", "P8SERIAL"),
                      "b1": ("SM-S911", "R58M"), "b2": ("SM-S911", "R58M")}
    crash_key = next(iter(set(_keys(runs["a2"])) - set(_keys(runs["a1"]))))
    assert found[crash_key] == ["Pixel 8", "SM-S911"]


def test_network_serials_on_two_hosts_are_two_devices(sources, tmp_path):
    """`adb connect`ed phones and emulators are named relative to their host: the same serial on
    two lab hosts is two phones; a USB serial is the hardware's, whichever host it moved to."""
    base = tmp_path / "runs"
    for i, (serial, host, server) in enumerate([("127.0.0.1:5555", "lab1", "127.0.0.1:5037"),
                                                ("127.0.0.1:5555", "lab2", "127.0.0.1:5037"),
                                                ("emulator-5554", "lab1", "farm:5037"),
                                                ("R58M", "lab1", "127.0.0.1:5037"), ("R58M", "lab2", "127.0.0.1:5037")]):
        run = _on(sources["crash"], base / f"r{i}", "Phone", serial)
        m = json.loads((run / "manifest.json").read_text())
        m["device"].update(runner_host=host, adb_server=server)
        (run / "manifest.json").write_text(json.dumps(m))
    assert main(["merge", str(base), "-o", str(tmp_path / "out"), "--quiet"]) == 0
    table = json.loads((tmp_path / "out" / MERGE_TABLE).read_text())
    assert {d["device"]: d["runs"] for d in table["devices"]} == {
        "127.0.0.1:5555@lab1": 1, "127.0.0.1:5555@lab2": 1, "emulator-5554@farm:5037": 1, "R58M": 2}


@pytest.mark.parametrize("case", ["missing", "empty", "damaged", "out_is_file"])
def test_bad_input_is_exit_3_with_a_hint(night, tmp_path, case):
    base, runs = night
    out = tmp_path / "out"
    args = [str(base)]
    if case == "missing":
        args = [str(tmp_path / "nope")]
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args = [str(tmp_path / "empty")]
    elif case == "damaged":
        (runs["b1"] / "classification.json").write_text("{not json")
    else:
        out.write_text("x")
    res = subprocess.run([sys.executable, "-m", "soak", "merge", *args, "-o", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "soak: error:" in res.stderr and "hint:" in res.stderr and "Traceback" not in res.stderr
    if case == "damaged":
        assert "b1/classification.json" in res.stderr

"""The shipped GitLab pipeline (docs/ci/gitlab-ci.yml) run for real by gitlab-ci-local's shell
executor inside the lab's network namespace: two adbd phones, one made to crash by a test-engine
fault plan given as a pipeline variable; the merge job's table lists each finding once with
per-device counts, its JUnit has one suite per run, and the history has the runs (issue 16).

Needs gitlab-ci-local (npm, pinned in .ci/setup), rsync and git besides the lab's needs."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from soak.run_folder import MERGE_TABLE

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "docs" / "ci" / "gitlab-ci.yml"
POLICY = """[gate]
name = "lab"
min_iterations = 10
[errors.severity]
critical = { max_count = 1 }      # the injected crash, once, recovered
[recovery]
min_rate = 1.0
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)


def _pipeline_repo(tmp_path: Path, serial_a: str, serial_b: str) -> Path:
    """A project that includes the shipped template unchanged and lists the lab's two phones."""
    repo = tmp_path / "project"
    (repo / "ci").mkdir(parents=True)
    shutil.copyfile(TEMPLATE, repo / "ci" / "soak-lab.yml")
    (repo / ".gitlab-ci.yml").write_text(
        "include:\n  - local: ci/soak-lab.yml\n"
        "soak:\n  parallel:\n    matrix:\n"
        f"      - SERIAL: \"{serial_a}\"\n"
        f"      - SERIAL: \"{serial_b}\"\n"
        "        SOAK_DEVICE_ARGS: \"--fault-plan $SOAK_CRASH_PLAN\"\n")
    _git(tmp_path, "init", "-q", "-b", "main", str(repo))
    _git(repo, "-c", "user.name=soak", "-c", "user.email=soak@localhost", "add", "-A")
    _git(repo, "-c", "user.name=soak", "-c", "user.email=soak@localhost", "commit", "-qm", "lab")
    _git(repo, "remote", "add", "origin", "http://127.0.0.1/soak.git")  # never contacted
    return repo


def _pipeline(lab, tmp_path: Path, a, b, policy: str) -> tuple[subprocess.CompletedProcess, Path, Path, str]:
    """Run the pipeline in gitlab-ci-local inside the lab's network namespace: the phones'
    jobs, then the merge.  Phone b crashes (a fault plan in a pipeline variable)."""
    repo = _pipeline_repo(tmp_path, a.serial, b.serial)
    assert (repo / "ci" / "soak-lab.yml").read_bytes() == TEMPLATE.read_bytes()
    (repo / "lab-gate.toml").write_text(policy)
    crash_plan = tmp_path / "crash.json"
    crash_plan.write_text(json.dumps([{"kind": "crash", "at": [4], "signal": "segv"}]))
    db = tmp_path / "history.sqlite"
    argv = lab.cmd(["gitlab-ci-local", "--shell-executor-no-image", "--no-color",
                    "--variable", "SOAK_RUN_ARGS=--engine test --iterations 12 --max-new-tokens 8",
                    "--variable", f"SOAK_CRASH_PLAN={crash_plan}",
                    "--variable", "SOAK_POLICY=lab-gate.toml",
                    "--variable", f"SOAK_HISTORY={db}"])
    env = lab.env({"PYTHONPATH": str(REPO)})  # the jobs' `soak` is this checkout's
    res = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=540)
    return res, repo, db, res.stdout[-6000:] + res.stderr[-3000:]


def test_gitlab_pipeline_on_two_phones(lab, tmp_path):
    a = lab.add_device("ci-a")
    b = lab.add_device("ci-b", props={"ro.product.model": "Other Phone", "ro.serialno": "ci-b"})
    res, repo, db, log = _pipeline(lab, tmp_path, a, b, POLICY)
    assert res.returncode == 0, log
    night = repo / "night"
    table = json.loads((night / MERGE_TABLE).read_text())

    # both phones ran, each under its own device key, model and serial from the manifest; an
    # `adb connect`ed serial is only unique on its host, so the key says which host reached it
    devices = {d["serial"]: d for d in table["devices"]}
    assert set(devices) == {a.serial, b.serial}, log
    host = socket.gethostname()
    assert {d["device"] for d in devices.values()} == {f"{a.serial}@{host}", f"{b.serial}@{host}"}
    assert devices[a.serial]["model"] == "Fake Phone" and devices[b.serial]["model"] == "Other Phone"
    assert all(d["runs"] == 1 and d["iterations"] == 12 for d in devices.values())
    assert table["totals"]["runs"] == 2 and table["totals"]["gated"] == 2 and table["totals"]["gate_failed"] == 0

    # the crash: listed once, counted on the crashing phone only
    crashes = [f for f in table["faults"] if f["kind"] == "crash"]
    assert len(crashes) == 1, table["faults"]
    assert crashes[0]["devices"] == {devices[b.serial]["device"]: {"count": 1, "runs": 1}}
    keys = [f["fault"] for f in table["faults"]]
    assert len(keys) == len(set(keys))
    runs = {r["serial"]: r for r in table["runs"]}
    assert runs[a.serial]["findings"] == {} and crashes[0]["fault"] in runs[b.serial]["findings"]
    assert all(r["classified"] == "run" for r in table["runs"])  # read, not re-classified

    # the merged JUnit: one suite per run, named by run id, model and serial, from the gate
    suites = ET.parse(night / "junit.xml").getroot().findall("testsuite")
    names = sorted(s.get("name") for s in suites)
    assert len(names) == 2 and names[0] != names[1]
    assert any("Fake Phone" in n and a.serial in n for n in names)
    assert any("Other Phone" in n and b.serial in n for n in names)
    for s in suites:
        props = {p.get("name"): p.get("value") for p in s.iter("property")}
        assert props["source"] == "gate.json" and props["run_id"] in s.get("name")
    assert "Other Phone" in (night / "report.html").read_text()

    # each phone's job left its own JUnit for GitLab's test report, and its run folder
    per_job = sorted(repo.glob("logs/junit-*.xml"))
    assert len(per_job) == 2, sorted(p.name for p in repo.glob("logs/*"))
    suite_names = {ET.parse(p).getroot().find("testsuite").get("name") for p in per_job}
    assert len(suite_names) == 2 and all(n.startswith("lab | night-") for n in suite_names)
    assert any(f"Fake Phone {a.serial}" in n for n in suite_names)
    assert any(f"Other Phone {b.serial}" in n for n in suite_names)

    # the merge job added both runs to the history, with device and adb server
    from soak import history

    conn = history.connect(db)
    rows = {r["serial"]: dict(r) for r in conn.execute("SELECT * FROM runs")}
    conn.close()
    assert set(rows) == {a.serial, b.serial}
    assert rows[b.serial]["device"] == "Other Phone" and rows[b.serial]["adb_server"] == "127.0.0.1:5037"

    # ... and published the dashboard with the night's artifacts: the crash is new tonight, on phone b
    site = night / "dashboard"
    index = (site / "index.html").read_text()
    assert f"data-key='{crashes[0]['fault']}'" in index and "data-status='new'" in index
    page = site / "causes" / f"{crashes[0]['fault']}.html"
    assert page.is_file() and "Other Phone" in page.read_text()
    assert json.loads((site / "history.json").read_text())["runs"] == 2


def test_a_failed_gate_fails_its_phone_and_the_night_is_still_merged(lab, tmp_path):
    """With a gate that allows no crash, the crashing phone's job fails (and the pipeline);
    its run folder is still uploaded (artifacts when: always) and the merge job still runs
    (when: always): the night's JUnit has that phone's failed gate rule."""
    a = lab.add_device("ci-c")
    b = lab.add_device("ci-d", props={"ro.product.model": "Other Phone"})
    strict = POLICY.replace("critical = { max_count = 1 }", "critical = { max_count = 0 }")
    res, repo, db, log = _pipeline(lab, tmp_path, a, b, strict)
    assert res.returncode != 0, log
    assert "merge" in log and "soak merge logs -o night" in log
    table = json.loads((repo / "night" / MERGE_TABLE).read_text())
    runs = {r["serial"]: r for r in table["runs"]}
    assert set(runs) == {a.serial, b.serial}, log
    assert runs[a.serial]["gate_passed"] is True and runs[b.serial]["gate_passed"] is False
    suites = {s.get("name"): s for s in ET.parse(repo / "night" / "junit.xml").getroot().findall("testsuite")}
    failed = [c.get("name") for s in suites.values() for c in s.iter("testcase") if c.find("failure") is not None]
    assert failed == ["errors.severity.critical"]
    (bad,) = [s for n, s in suites.items() if b.serial in n]
    assert int(bad.get("failures")) == 1


def test_buildkite_template_has_the_same_shape():
    """buildkite.yml is not run here (no Buildkite agent offline); it must keep the GitLab
    template's shape: each phone one job at a time, the same soak commands, a merge that
    waits for every phone whatever they did."""
    import yaml

    gitlab = yaml.safe_load(TEMPLATE.read_text())
    bk = yaml.safe_load((TEMPLATE.parent / "buildkite.yml").read_text())
    assert gitlab["soak"]["resource_group"] == "phone-$SERIAL" and gitlab["merge"]["when"] == "always"
    assert gitlab["soak"]["artifacts"]["when"] == "always"
    phones = bk["steps"][0]["steps"]
    assert len(phones) >= 2
    for step in phones:
        serial = step["env"]["SERIAL"]
        assert step["concurrency_group"] == f"phone-{serial}" and step["concurrency"] == 1
        assert serial in step["label"] and "logs/**/*" in step["artifact_paths"]
    merge = bk["steps"][1]
    assert merge["depends_on"] == bk["steps"][0]["key"] and merge["allow_dependency_failure"] is True

    def words(script: str) -> set[str]:
        return {w.strip('"') for w in script.replace("$$", "$").split()}

    gl_run = words(" ".join(gitlab["soak"]["script"]))
    bk_run = words(phones[0]["command"])
    for flag in ("run", "--target", '"adb:$SERIAL', "--gate", "--junit", "$SOAK_RUN_ARGS", "$SOAK_DEVICE_ARGS"):
        assert flag.strip('"') in gl_run and flag.strip('"') in bk_run, flag
    for line in gitlab["merge"]["script"]:
        assert line.replace("$", "$$") in merge["command"], line

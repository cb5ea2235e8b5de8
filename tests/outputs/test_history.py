"""`soak history` (issue 16): findings of real test-engine runs stored night after night in
SQLite; the three questions (what is new tonight, since which MNN build, on which drivers);
parallel writers; schema migration; bad input."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from soak import history

CRASH = [{"kind": "crash", "at": [4], "signal": "segv"}]
MAP_ERROR = [{"kind": "kv_map_error", "at": [6]}]
CL_STORM = [{"kind": "cl_error", "at": [3], "code": -5, "info": "Raster", "repeat": 12}]


def _night(run: Path, dest: Path, *, started: str, mnn: str, gpu: str, driver: str, device: str) -> Path:
    """A copy of a real run as if it ran on another night / build / phone.  Only the context
    in the manifest changes; the events and the classification are the real ones."""
    import shutil

    shutil.copytree(run, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest.update({"run_id": dest.name, "started": started, "mnn_version": mnn,
                     "opencl": {"device": gpu, "driver_version": driver},
                     "device": {"model": device, "serial": device.lower()}})
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    from soak.judges import run_judged
    from soak.loop.config import RunConfig

    root = tmp_path_factory.mktemp("history-runs")
    base = {}
    for name, plan in (("clean", []), ("crash", CRASH), ("maperr", MAP_ERROR + CL_STORM)):
        cfg = RunConfig(engine="test", iterations=12, seed=5, out_dir=str(root / "src"), run_id=name,
                        fault_plan=plan, max_new_tokens=8, quiet=True, argv=["pytest", name])
        base[name] = Path(run_judged(cfg).run_dir)  # with classification.json, as `soak run` writes
    out = root / "nights"
    out.mkdir()
    a = dict(gpu="Adreno 740", driver="512.615", device="SM-S911")
    b = dict(gpu="Mali-G715", driver="r44p0", device="Pixel-8")
    return {
        # night 1: MNN 3.5.0, both phones clean
        "n1a": _night(base["clean"], out / "n1a", started="2026-11-28T02:00:00+00:00", mnn="3.5.0", **a),
        "n1b": _night(base["clean"], out / "n1b", started="2026-11-28T02:10:00+00:00", mnn="3.5.0", **b),
        # night 2: MNN 3.6.0, the Adreno phone crashes
        "n2a": _night(base["crash"], out / "n2a", started="2026-11-29T02:00:00+00:00", mnn="3.6.0", **a),
        "n2b": _night(base["clean"], out / "n2b", started="2026-11-29T02:10:00+00:00", mnn="3.6.0", **b),
        # night 3: MNN 3.6.1, crash again on Adreno, and a new map error on Mali
        "n3a": _night(base["crash"], out / "n3a", started="2026-11-30T02:00:00+00:00", mnn="3.6.1", **a),
        "n3b": _night(base["maperr"], out / "n3b", started="2026-11-30T02:10:00+00:00", mnn="3.6.1", **b),
    }


def _keys(run: Path) -> set[str]:
    return {r["key"] for r in history.run_findings(json.loads((run / "classification.json").read_text()))}


def test_three_questions(nights, tmp_path):
    conn = history.connect(tmp_path / "h.sqlite")
    history.add_runs(conn, [nights[k] for k in ("n1a", "n1b", "n2a", "n2b")])
    crash_keys = _keys(nights["n2a"]) - _keys(nights["n1a"])
    assert crash_keys, "the crash run must have a finding the clean run lacks"
    # after night 2, the crash is new
    assert {r["key"] for r in history.new_findings(conn)["new"]} == crash_keys
    history.add_runs(conn, [nights["n3a"], nights["n3b"]])
    tonight = history.new_findings(conn)
    new = {r["key"] for r in tonight["new"]}
    assert tonight["runs"] == 2
    assert new == _keys(nights["n3b"]) - _keys(nights["n1b"]) - crash_keys
    assert new and not (new & crash_keys), "the crash was seen the night before: not new"
    for r in tonight["new"]:
        assert r["devices"] == ["Pixel-8"]
    key = sorted(crash_keys)[0]
    since = history.since_build(conn, key)
    assert since["first_bad"] == "3.6.0" and since["last_good"] == "3.5.0"
    assert [v["mnn_version"] for v in since["versions"]] == ["3.5.0", "3.6.0", "3.6.1"]
    drivers = history.by_driver(conn, key)
    assert [(d["gpu"], d["driver"], d["with_finding"], d["runs"]) for d in drivers["affected"]] == \
        [("Adreno 740", "512.615", 2, 3)]
    assert [d["gpu"] for d in drivers["clean"]] == ["Mali-G715"]
    listing = {r["key"]: r for r in history.findings(conn)}
    assert listing[key]["runs"] == 2 and listing[key]["first_seen"].startswith("2026-11-29")
    assert listing[key]["last_seen"].startswith("2026-11-30")


def test_adding_a_run_again_replaces_it(nights, tmp_path):
    conn = history.connect(tmp_path / "h.sqlite")
    first = history.add_runs(conn, [nights["n2a"]])
    again = history.add_runs(conn, [nights["n2a"]])
    assert not first[0].replaced and again[0].replaced
    total = conn.execute("SELECT count(*) FROM occurrences").fetchone()[0]
    assert total == first[0].findings


def _writer(args):
    db, runs = args
    conn = history.connect(db)
    history.add_runs(conn, runs)
    conn.close()
    return len(runs)


def test_parallel_writers(nights, tmp_path):
    """Six processes add at once (as parallel CI jobs do): nothing lost, nothing fails."""
    import shutil

    runs = []
    for i in range(24):
        src = nights[("n2a", "n3b", "n1a")[i % 3]]
        dest = tmp_path / "runs" / f"job{i}"
        shutil.copytree(src, dest)
        m = json.loads((dest / "manifest.json").read_text())
        m["run_id"] = dest.name
        (dest / "manifest.json").write_text(json.dumps(m))
        runs.append(dest)
    db = tmp_path / "shared.sqlite"
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        done = pool.map(_writer, [(db, runs[i::6]) for i in range(6)])
    assert sum(done) == 24
    conn = history.connect(db)
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 24
    expected = sum(len(_keys(r)) for r in runs)
    assert conn.execute("SELECT count(*) FROM occurrences").fetchone()[0] == expected


def test_migrates_an_older_file_and_refuses_a_newer(tmp_path):
    old = tmp_path / "old.sqlite"
    sqlite3.connect(old).close()  # version 0: empty file from an older soak
    conn = history.connect(old)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
    conn.close()
    newer = tmp_path / "newer.sqlite"
    c = sqlite3.connect(newer)
    c.execute(f"PRAGMA user_version = {history.SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(history.HistoryError, match="newer than this soak"):
        history.connect(newer)


def _soak(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soak", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli(nights, tmp_path):
    db = str(tmp_path / "h.sqlite")
    proc = _soak("history", "--db", db, "add", str(nights["n1a"]), str(nights["n2a"]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "added n1a" in proc.stdout and "added n2a" in proc.stdout
    proc = _soak("history", "--db", db, "--json", "new", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    new = json.loads(proc.stdout)["new"]
    assert {r["key"] for r in new} == _keys(nights["n2a"]) - _keys(nights["n1a"])
    key = new[0]["key"]
    proc = _soak("history", "--db", db, "since", key, cwd=tmp_path)
    assert proc.returncode == 0 and "first seen with MNN 3.6.0, last clean build 3.5.0" in proc.stdout
    proc = _soak("history", "--db", db, "drivers", key, cwd=tmp_path)
    assert proc.returncode == 0 and "seen on   Adreno 740 driver 512.615: 1/2 run(s)" in proc.stdout
    proc = _soak("history", "--db", db, cwd=tmp_path)
    assert proc.returncode == 0 and key[:30] in proc.stdout


def test_a_killed_run_without_classification_is_classified_in_memory(nights, tmp_path):
    import shutil

    run = tmp_path / "killed"
    shutil.copytree(nights["n2a"], run)
    expected = _keys(run)
    (run / "classification.json").unlink()
    conn = history.connect(tmp_path / "h.sqlite")
    history.add_runs(conn, [run])
    stored = {r[0] for r in conn.execute("SELECT key FROM occurrences WHERE run_id = 'n2a'")}
    conn.close()
    assert stored == expected and not (run / "classification.json").exists()


def test_bad_input(tmp_path):
    (tmp_path / "notarun").mkdir()
    db = str(tmp_path / "h.sqlite")
    proc = _soak("history", "--db", db, "add", str(tmp_path / "notarun"), cwd=tmp_path)
    assert proc.returncode == 3 and "not a run folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = _soak("history", "--db", db, "since", "sig-000000000000", cwd=tmp_path)
    assert proc.returncode == 3 and "no finding" in proc.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    proc = _soak("history", "--db", str(junk), cwd=tmp_path)
    assert proc.returncode == 3 and "unreadable" in proc.stderr and "Traceback" not in proc.stderr


def test_stores_root_causes_not_their_cascade(tmp_path):
    """A real H200 run (injected clCreateBuffer failure at load, 3,000+ cascading records):
    the history holds the one root cause, not its cascade, and no benign probe."""
    import shutil

    src = Path(__file__).resolve().parents[1] / "data" / "real" / "nv-alloc-load"
    run = tmp_path / "nv-alloc-load"
    shutil.copytree(src, run)
    subprocess.run([sys.executable, "-m", "soak", "classify", str(run)], capture_output=True, timeout=120, check=True)
    classification = json.loads((run / "classification.json").read_text())
    causes = classification["causes"]
    assert len(causes) == 1 and len(classification["findings"]) > 1
    conn = history.connect(tmp_path / "h.sqlite")
    history.add_runs(conn, [run])
    keys = [r[0] for r in conn.execute("SELECT key FROM occurrences")]
    assert keys == [causes[0]["fault_id"] or causes[0]["signature"]]


def test_migrates_a_schema_1_file_with_its_runs(tmp_path):
    """A file written by the soak before issue 26 (schema 1) keeps its runs and findings; the
    upgrade gives each run its night (start less 12 h) and adds the labels and repros."""
    path = tmp_path / "v1.sqlite"
    c = sqlite3.connect(path)
    c.executescript(history._MIGRATIONS[0])
    c.execute("PRAGMA user_version = 1")
    c.execute("INSERT INTO runs (run_id, started, added, device) VALUES ('r1', '2026-11-02T03:00:00+00:00', "
              "'2026-11-02T09:00:00+00:00', 'SM-S911')")
    c.execute("INSERT INTO findings VALUES ('soak-oom-kill', 'OOM', 'critical', 1)")
    c.execute("INSERT INTO occurrences VALUES ('soak-oom-kill', 'r1', 2, 3, 4)")
    c.commit()
    c.close()
    conn = history.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION == 2
    assert conn.execute("SELECT night FROM runs").fetchone()[0] == "2026-11-01"  # 03:00 belongs to the night before
    assert conn.execute("SELECT label FROM occurrences").fetchone()[0] is None
    assert conn.execute("SELECT count(*) FROM repros").fetchone()[0] == 0
    (cause,) = history.lab(conn)["causes"]
    assert (cause["key"], cause["status"], cause["first_night"]) == ("soak-oom-kill", "new", "2026-11-01")

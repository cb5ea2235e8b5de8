"""soak status on a run being written (issue 15): from another process, while the run
goes and after it ends; its fault count is the summary's."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")


def soak(*args):
    return subprocess.run([sys.executable, "-m", "soak", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=120)


def test_status_of_a_running_then_finished_run(tmp_path):
    run_dir = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-m", "soak", "run", "--demo", "--iterations", "100000",
                             "--duration", "12s", "--out", str(tmp_path), "--run-id", "live", "--quiet"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until it has run a few iterations
            out = soak("status", run_dir, "--json")
            if out.returncode == 0 and json.loads(out.stdout)["iterations"] >= 5:
                break
            time.sleep(0.5)
        st = json.loads(out.stdout)
        assert st["state"] == "running" and st["seed"] == 0
        assert 0 < st["fraction"] < 1 and 0 < st["time_left_s"] <= 12
        text = soak("status", run_dir).stdout
        assert "state    running" in text and "left     0:" in text and "faults   " in text
        gate = soak("gate", run_dir)  # judged on the events so far, and said so; run.complete fails it
        assert gate.returncode == 1 and "is in progress" in gate.stderr
    finally:
        assert proc.wait(timeout=90) == 0, proc.stderr.read()
    st = json.loads(soak("status", run_dir, "--json").stdout)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert st["state"] == "complete" and st["iterations"] == summary["iterations"]
    assert st["faults"] == summary["faults"] and st["faults_by_kind"] == summary["faults_by_kind"]
    assert st["memory"]["samples"] >= 3 and st["memory"]["slope_bytes_per_hour"] is not None
    assert "in progress" not in soak("gate", run_dir).stderr  # judged once it ended
    watched = soak("status", run_dir, "--watch", "0.1")  # a finished run: shown once, then done
    assert watched.returncode == 0 and watched.stdout.count("state    complete") == 1


def test_status_of_no_run_folder_is_bad_input(tmp_path):
    out = soak("status", tmp_path)
    assert out.returncode == 3 and "not a run folder" in out.stderr and "Traceback" not in out.stderr

"""SIGTERM with several phones (issue 13): each device runs in a thread of its own and only the
main thread takes signals.  Every device's run must still end with run_end (reason `terminated`)
and its summary, combined.json must be written, soak must exit 143 soon, and a second signal
during the shutdown must not lose any of it."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from fakedevice.runs import events, wait_for_iterations

from soak.errors import ExitCode
from soak.multi_device import device_folder
from soak.run_folder import read_events


def _ended_terminated(run: Path) -> dict:
    evs = list(read_events(run))
    assert evs[-1]["event"] == "run_end", evs[-1]
    assert evs[-1]["reason"] == "terminated" and evs[-1]["aborted"] is True, evs[-1]
    assert [e["seq"] for e in evs] == list(range(len(evs)))  # no line lost or doubled
    summary = json.loads((run / "summary.json").read_text())
    assert summary["end_reason"] == "terminated"
    assert summary["iterations"] == sum(e["event"] == "iteration" for e in evs) >= 3
    exits = [e for e in evs if e["event"] == "worker_exit"]
    assert exits and exits[-1]["phase"] == "teardown"  # the worker was ended, not abandoned
    assert not (run / ".soak-reserve").exists()
    return summary


@pytest.mark.parametrize("how", ["sigterm", "more_signals_during_a_hang"])
def test_sigterm_ends_every_device_run_and_writes_the_summaries(lab, soak, tmp_path, how):
    n = len(lab.devices)
    phones = [lab.add_device(f"sig{n}a"), lab.add_device(f"sig{n}b")]
    out = tmp_path / "logs"
    extra = []
    if how == "more_signals_during_a_hang":
        # both engines hang at iteration 3: the watchdog (600 s) and the teardown (300 s) would
        # hold the shutdown for minutes; the abort must not wait for either
        extra = ["--fault-plan", soak.plan("hang", [{"kind": "hang", "at": [3]}]),
                 "--timeout-respond", "600", "--timeout-teardown", "300"]
    proc = soak.start("run", *[arg for p in phones for arg in ("--target", f"adb:{p.serial}")],
                      "--engine", "test", "--iterations", "100000", "--max-new-tokens", "8",
                      "--out", str(out), "--run-id", "pair", *extra)
    runs = [out / "pair" / device_folder(p.serial) for p in phones]
    try:
        for run in runs:
            wait_for_iterations(run, 3, proc, timeout=90)
        if how == "more_signals_during_a_hang":
            time.sleep(0.5)  # into the hang at iteration 3
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if how == "more_signals_during_a_hang":
            time.sleep(0.3)  # the shutdown is under way: the hung workers get their 2 s
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == ExitCode.TERMINATED == 143, err[-3000:]
    assert "Traceback" not in err
    assert took < 20, took  # every device within the abort grace, no watchdog, no teardown timeout
    combined = json.loads((out / "pair" / "combined.json").read_text())
    assert combined["exit_code"] == 143
    assert sorted(e["serial"] for e in combined["devices"]) == sorted(p.serial for p in phones)
    for run, entry in zip(runs, sorted(combined["devices"], key=lambda e: [p.serial for p in phones].index(e["serial"]))):
        summary = _ended_terminated(run)
        assert entry["exit_code"] == 143 and entry["summary"]["iterations"] == summary["iterations"]
        assert "error" not in entry
    if how == "more_signals_during_a_hang":
        for run, phone in zip(runs, phones):
            assert not any(f["kind"] == "hang" for f in events(run, {"fault"}))  # abandoned, not judged
            assert events(run, {"iteration"})[-1]["i"] == 2
            for start in events(run, {"worker_start"}):  # the hung runner was killed on the phone
                gone = lab.adb("-s", phone.serial, "shell", f"test -d /proc/{start['pid']} && echo alive || echo gone")
                assert gone.stdout.strip() == "gone"

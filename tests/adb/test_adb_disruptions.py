"""Devices that go away mid-run: disconnect, freeze, reboot.  The run records
what happened as distinct faults, waits for the device and goes on."""

from __future__ import annotations

import threading
import time

from fakedevice.runs import events, wait_for_iterations

SLOW = [{"kind": "slow", "from": 0, "factor": 40}]  # ~0.1 s per iteration: the run is still going
SLOW_SHORT = [{"kind": "slow", "from": 0, "factor": 10}]  # longest prompt (2048 tokens) < 1.1 s
FROZEN_S = 30.0  # longer than any single adb call's timeout: soak must notice


def _faults(run, kind):
    return [f for f in events(run, {"fault"}) if f["kind"] == kind]


def _finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def test_disconnect_then_resume(soak, lab, fresh_phone, tmp_path):
    out = tmp_path / "logs"
    proc = soak.start("run", "--target", f"adb:{fresh_phone.serial},wait=60", "--engine", "test",
                      "--iterations", "40", "--max-new-tokens", "8", "--out", str(out), "--run-id", "unplug",
                      "--fault-plan", soak.plan("slow", SLOW))
    run = out / "unplug"
    try:
        wait_for_iterations(run, 5, proc)
        fresh_phone.freeze()  # unplugged: nothing answers for a while
        lab.adb("disconnect", fresh_phone.serial)
        threading.Timer(3.0, fresh_phone.thaw).start()
        _finish(proc)
    finally:
        fresh_phone.thaw()
        proc.kill()
    offline = _faults(run, "device_offline")
    assert offline and offline[0]["state"] in ("absent", "offline", "disconnected")
    assert not _faults(run, "device_reboot")
    iters = events(run, {"iteration"})
    assert len(iters) == 40
    assert max(e["worker_generation"] for e in iters) >= 1
    assert events(run, {"run_end"})[0]["reason"] == "iterations"
    assert "[soak-adb] lost the connection" in (run / "engine.log").read_text(errors="replace")


def test_frozen_device_then_resume(soak, fresh_phone, tmp_path):
    """adbd stops answering while the runner is mid-call: every adb call times
    out on its own (a plain adbutils shell() would block for good)."""
    out = tmp_path / "logs"
    proc = soak.start("run", "--target", f"adb:{fresh_phone.serial},wait=60", "--engine", "test",
                      "--iterations", "30", "--max-new-tokens", "8", "--timeout-respond", "3", "--timeout-reset", "3", "--out", str(out),
                      "--run-id", "frozen", "--fault-plan", soak.plan("slow", SLOW_SHORT))
    run = out / "frozen"
    try:
        wait_for_iterations(run, 5, proc)
        fresh_phone.freeze()
        started = time.monotonic()
        threading.Timer(FROZEN_S, fresh_phone.thaw).start()
        _finish(proc)
    finally:
        fresh_phone.thaw()
        proc.kill()
    assert time.monotonic() - started >= FROZEN_S
    assert len(_faults(run, "hang")) >= 1
    offline = _faults(run, "device_offline")
    assert offline and offline[0]["state"] == "unresponsive"
    assert len(events(run, {"iteration"})) == 30
    assert events(run, {"run_end"})[0]["reason"] == "iterations"


def test_reboot_then_resume(soak, fresh_phone, tmp_path):
    out = tmp_path / "logs"
    before = fresh_phone.boot_id
    proc = soak.start("run", "--target", f"adb:{fresh_phone.serial},wait=60", "--engine", "test",
                      "--iterations", "40", "--max-new-tokens", "8", "--out", str(out), "--run-id", "reboot",
                      "--fault-plan", soak.plan("slow", SLOW))
    run = out / "reboot"
    try:
        wait_for_iterations(run, 5, proc)
        fresh_phone.reboot(delay_s=2.0)
        _finish(proc)
    finally:
        proc.kill()
    after = fresh_phone.boot_id
    assert after != before and fresh_phone.boots() == 2
    reboot = _faults(run, "device_reboot")
    assert len(reboot) == 1
    assert reboot[0]["boot_id_before"] == before and reboot[0]["boot_id_after"] == after
    # /data was wiped by the reboot (tmpfs): the bundle was pushed again
    assert len(events(run, {"device_push"})) == 2
    iters = events(run, {"iteration"})
    assert len(iters) == 40 and max(e["worker_generation"] for e in iters) >= 1
    assert events(run, {"run_end"})[0]["reason"] == "iterations"

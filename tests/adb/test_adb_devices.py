"""`soak devices`, target strings, remote adb servers and the errors a user
meets: an absent phone, a runner built for another ABI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fakedevice.runs import events
from soak.run_folder import MERGE_TABLE

ARM64_ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x03\x00" + (183).to_bytes(2, "little") + b"\0" * 44


def test_devices_lists_with_probe_info(soak, phone):
    res = soak("devices", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["serial"]: r for r in json.loads(res.stdout)}
    row = rows[phone.serial]
    assert row["state"] == "device" and row["model"] == "Fake Phone" and row["soc"] == "SM8550"
    assert row["gpu"]["renderer"] == "Adreno (TM) 740" and row["android_version"] == "14"
    text = soak("devices", phone.serial)
    assert text.returncode == 0 and "Fake Phone" in text.stdout and "Adreno" in text.stdout


def test_absent_device_is_exit_9_with_a_hint(soak, phone, tmp_path):
    res = soak("devices", "R58M00000")
    assert res.returncode == 9
    assert "device R58M00000 is not connected" in res.stderr and phone.serial in res.stderr
    assert "hint:" in res.stderr and "Traceback" not in res.stderr
    run = soak("run", "--target", "adb:R58M00000", "--engine", "test", "--iterations", "1", "--out", str(tmp_path))
    assert run.returncode == 9 and "not connected" in run.stderr and "Traceback" not in run.stderr


def test_no_adb_server_is_exit_9(soak, tmp_path):
    res = soak("devices", "--server", "127.0.0.1:1")
    assert res.returncode == 9 and "cannot reach the adb server" in res.stderr


def test_bad_target_string_is_bad_input(soak, tmp_path):
    res = soak("run", "--target", "adb:x,colour=blue", "--engine", "test", "--out", str(tmp_path))
    assert res.returncode == 3 and "unknown target option" in res.stderr


def test_runner_for_another_abi_is_refused_before_pushing(soak, phone, tmp_path):
    runner = tmp_path / "soak-runner-arm64"
    runner.write_bytes(ARM64_ELF)
    res = soak("run", "--target", f"adb:{phone.serial},runner={runner}", "--engine", "test", "--iterations", "1",
               "--out", str(tmp_path / "logs"))
    assert res.returncode == 6, res.stderr
    assert "aarch64" in res.stderr and "NDK" in res.stderr


def test_all_connected_and_remote_server(lab, phone, soak, tmp_path):
    """`adb` alone = every device in state "device"; adb@HOST:PORT = another server."""
    code = ("import sys; from soak.targets.adb.target import make_targets; "
            "print(' '.join(t.serial for t in make_targets(sys.argv[1:])))")
    res = lab.run([sys.executable, "-c", code, "adb"])
    assert res.returncode == 0, res.stderr
    assert phone.serial in res.stdout.split()

    # a second adb server on port 5038 (a "device farm" server) that also sees the phone
    assert lab.adb("-P", "5038", "start-server").returncode == 0
    try:
        assert "connected" in lab.adb("-P", "5038", "connect", phone.serial).stdout
        out = tmp_path / "logs"
        res = soak("run", "--target", f"adb:{phone.serial}@127.0.0.1:5038", "--engine", "test", "--iterations", "3",
                   "--out", str(out), "--run-id", "farm")
        assert res.returncode == 0, res.stderr
        host = json.loads((out / "farm" / "manifest.json").read_text())["host"]
        assert host["adb_server"] == "127.0.0.1:5038"
        device = json.loads((out / "farm" / "manifest.json").read_text())["device"]
        assert device["adb_server"] == "127.0.0.1:5038" and device["serial"] == phone.serial
        assert device["model"] == "Fake Phone" and device["connection"] == "network"  # `adb connect`ed
        assert len(events(out / "farm", {"iteration"})) == 3
        env_res = lab.run([sys.executable, "-m", "soak", "devices", "--json"],
                          env={"ADB_SERVER_SOCKET": "tcp:127.0.0.1:5038"})
        assert env_res.returncode == 0 and phone.serial in env_res.stdout
    finally:
        lab.adb("-P", "5038", "kill-server")


def test_phone_behind_another_hosts_adb_server(lab, soak, tmp_path):
    """A phone plugged into another host: that host's adb server (listening on its network,
    `adb -a`, in a namespace of its own) is reached over a veth cable from the lab, by
    adb:SERIAL@HOST:PORT and by ADB_SERVER_SOCKET.  The manifest records which server and
    serial reach which phone; `soak merge` and `soak history` carry it on."""
    from fakedevice.lab import Lab

    with Lab(tmp_path / "farm", listen_all=True) as farm:
        phone = farm.add_device("farm-phone", props={"ro.product.model": "Farm Phone"})
        _, farm_ip = lab.link(farm)
        server = f"{farm_ip}:5037"
        out = tmp_path / "logs"
        args = ("--engine", "test", "--iterations", "3", "--max-new-tokens", "8", "--out", str(out), "--quiet")
        res = soak("run", "--target", f"adb:{phone.serial}@{server}", *args, "--run-id", "remote")
        assert res.returncode == 0, res.stderr
        env_res = lab.run([sys.executable, "-m", "soak", "run", "--target", f"adb:{phone.serial}", *args,
                           "--run-id", "remote-env"], env={"ADB_SERVER_SOCKET": f"tcp:{server}"}, timeout=120)
        assert env_res.returncode == 0, env_res.stderr
    for run_id in ("remote", "remote-env"):
        manifest = json.loads((out / run_id / "manifest.json").read_text())
        device = manifest["device"]
        # only the farm's phone is a "Farm Phone": the run went through the farm's server
        assert device["model"] == "Farm Phone" and device["adb_server"] == server
        assert device["serial"] == phone.serial and device["kind"] == "adb" and device["runner_host"]
        assert len(events(out / run_id, {"iteration"})) == 3
    merged = soak("merge", str(out), "-o", str(tmp_path / "night"), "--history", str(tmp_path / "h.sqlite"))
    assert merged.returncode == 0, merged.stderr
    table = json.loads((tmp_path / "night" / MERGE_TABLE).read_text())
    assert [(d["device"], d["model"], d["serial"], d["adb_servers"], d["runs"]) for d in table["devices"]] == \
        [(f"{phone.serial}@{server}", "Farm Phone", phone.serial, [server], 2)]  # network serial: where it was
    from soak import history

    conn = history.connect(tmp_path / "h.sqlite")
    assert {tuple(r) for r in conn.execute("SELECT adb_server, serial, device FROM runs")} == \
        {(server, phone.serial, "Farm Phone")}
    conn.close()


def test_pip_engine_on_a_phone_is_bad_input(soak, phone, tmp_path):
    model = str(Path(__file__).resolve().parents[2] / "soak" / "models" / "qwen2-tiny" / "config.json")
    res = soak("run", "--target", f"adb:{phone.serial}", "--engine", "mnn-pip", "--model", model,
               "--iterations", "1", "--out", str(tmp_path / "logs"))
    assert res.returncode == 3, res.stderr
    assert "native engines only" in res.stderr and "Traceback" not in res.stderr


def test_crash_report_lines(lab, phone):
    """After a runner dies by a signal, soak reads the device's crash report
    (tombstone if readable, else logcat's crash buffer) for that pid."""
    phone.log(4242, "libc", "F", "Fatal signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr 0x0 in tid 4242")
    phone.log(4243, "libc", "F", "Fatal signal 6 (SIGABRT) in another process")
    # crash_dump's report, under its own pid (tag DEBUG), as Android logs it to the crash buffer
    for text in ("*** *** *** *** *** *** *** *** *** *** *** *** *** *** *** ***",
                 "pid: 4242, tid: 4250, name: soak-runner  >>> /data/local/tmp/soak/bin/soak-runner <<<",
                 "signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr 0x0000000000000000", "backtrace:",
                 "      #00 pc 00000000000a1b2c  /data/local/tmp/soak/lib/libMNN_CL.so "
                 "(_ZN3MNN6OpenCL21AttentionBufExecution8onResizeERKSt6vectorIPNS_6TensorESaIS4_EES8_+572)",
                 "      #01 pc 0000000000123456  /data/local/tmp/soak/lib/libMNN.so (MNN::Pipeline::allocMemory()+96)"):
        phone.log(5000, "DEBUG", "F", text)
    phone.log(5001, "DEBUG", "F", "pid: 4243, tid: 4243, name: other  >>> other <<<")
    code = ("import sys; from soak.targets.adb._conn import AdbLink; from soak.targets.adb.health import tombstone; "
            "print('\\n'.join(tombstone(AdbLink(sys.argv[1]), 4242)))")
    res = lab.run([sys.executable, "-c", code, phone.serial])
    assert res.returncode == 0, res.stderr
    assert "Fatal signal 11 (SIGSEGV)" in res.stdout and "another process" not in res.stdout
    assert "pid: 4242, tid: 4250" in res.stdout and "pid: 4243" not in res.stdout
    from soak.backtrace import title_frame

    assert title_frame(res.stdout.splitlines()) == "MNN::OpenCL::AttentionBufExecution::onResize"


def test_runner_that_cannot_start_on_the_device_is_a_harness_error(soak, phone, tmp_path):
    """soak-runner that dies before its hello (here: the linker error a missing
    libc++_shared.so gives) is soak's problem: exit 12, no crash, no recovery ladder."""
    src = tmp_path / "runner.c"
    src.write_text('#include <stdio.h>\nint main(void) { fputs("CANNOT LINK EXECUTABLE \\"soak-runner\\": '
                   'library \\"libc++_shared.so\\" not found\\n", stderr); return 1; }\n')
    runner = tmp_path / "soak-runner"
    import subprocess

    subprocess.run(["cc", "-o", str(runner), str(src)], check=True)
    logs = tmp_path / "logs"
    res = soak("run", "--target", f"adb:{phone.serial},runner={runner}", "--engine", "test", "--iterations", "2",
               "--out", str(logs), "--run-id", "h")
    assert res.returncode == 12, res.stderr
    first, hint = res.stderr.strip().splitlines()[-2:]
    assert "soak's worker did not start" in first and "CANNOT LINK EXECUTABLE" in first
    assert "NDK" in hint and "libs=DIR" in hint and "Traceback" not in res.stderr
    evs = events(logs / "h")
    assert not [e for e in evs if e["event"] in ("fault", "recovery", "worker_start")]
    assert [e["kind"] for e in evs if e["event"] == "error"] == ["harness"]
    assert evs[-1]["event"] == "run_end" and evs[-1]["reason"] == "harness_error"

"""`soak run --target adb:...` end to end against real adbd devices (see conftest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fakedevice.runs import events, wait_for_iterations

REPO = Path(__file__).resolve().parents[2]


def test_soak_on_device(soak, fresh_phone, lab, tmp_path):
    phone = fresh_phone
    out = tmp_path / "logs"
    res = soak("run", "--target", f"adb:{phone.serial}", "--engine", "test", "--iterations", "12",
               "--max-new-tokens", "8", "--out", str(out), "--run-id", "first")
    assert res.returncode == 0, res.stderr
    run = out / "first"
    starts = events(run, {"worker_start"})
    assert starts and starts[0]["runner"] == "native"
    device_pid = starts[0]["pid"]
    iters = events(run, {"iteration"})
    assert len(iters) == 12 and all(e["ok"] for e in iters)
    assert all((e["generated_tokens"] > 0 and e["output"]) or e["max_new_tokens"] == 0 for e in iters)
    assert sum(e["generated_tokens"] for e in iters) > 12
    mem = events(run, {"memory"})
    assert mem and all(m["pid"] == device_pid for m in mem)
    assert mem[0]["rss"] > 0 and mem[0]["threads"] >= 1 and mem[0]["fds"] >= 3
    assert mem[0]["meminfo"]["total_pss"] > 0  # dumpsys meminfo
    assert mem[0]["thermal"]["status"] == 0  # dumpsys thermalservice
    host = json.loads((run / "manifest.json").read_text())["host"]
    assert host["kind"] == "adb" and host["model"] == "Fake Phone" and host["board_platform"] == "kalama"
    assert host["gpu"]["renderer"] == "Adreno (TM) 740" and host["gpu"]["driver"] == "0676.32"
    assert host["boot_id"] == phone.boot_id
    pushed = events(run, {"device_push"})[0]
    assert pushed["pushed_files"] >= 3 and pushed["remote"] == f"/data/local/tmp/soak/{pushed['bundle']}"
    bundle = pushed["bundle"]
    listing = lab.adb("-s", phone.serial, "shell", f"ls /data/local/tmp/soak/{bundle}/bin /data/local/tmp/soak/{bundle}/lib")
    assert "soak-runner" in listing.stdout and "libsoak_test_engine.so" in listing.stdout

    # same files again: nothing is pushed
    res = soak("run", "--target", f"adb:{phone.serial}", "--engine", "test", "--iterations", "2",
               "--out", str(out), "--run-id", "second")
    assert res.returncode == 0, res.stderr
    again = events(out / "second", {"device_push"})[0]
    assert again["pushed_files"] == 0 and again["bundle"] == bundle


def test_logcat_lines_reach_the_engine_log(soak, phone, tmp_path):
    """MNN logs CL errors to logcat (tag MNNJNI) on Android: they are parsed like stdout lines."""
    out = tmp_path / "logs"
    proc = soak.start("run", "--target", f"adb:{phone.serial}", "--engine", "test", "--iterations", "400",
                      "--max-new-tokens", "8", "--out", str(out), "--run-id", "lc",
                      "--fault-plan", soak.plan("slow", [{"kind": "slow", "from": 0, "factor": 40}]))
    run = out / "lc"
    try:
        wait_for_iterations(run, 3, proc)
        pid = events(run, {"worker_start"})[0]["pid"]
        phone.log(pid + 100000, "MNNJNI", "I", "CL ERROR CODE : -4, info:not our process")
        phone.log(pid, "OtherTag", "I", "CL ERROR CODE : -4, info:not our tag")
        phone.log(pid, "MNNJNI", "I", "CL ERROR CODE : -5, info:mapBuffer")
        wait_for_iterations(run, 8, proc)
    finally:
        proc.kill()
        proc.wait()
    log = (run / "engine.log").read_text(errors="replace")
    assert "MNNJNI  : CL ERROR CODE : -5, info:mapBuffer" in log
    assert "not our process" not in log and "not our tag" not in log
    faults = [f for f in events(run, {"fault"}) if f["kind"] == "cl_error"]
    assert faults and faults[0]["code"] == -5 and faults[0]["info"] == "mapBuffer"


def test_crash_on_device(soak, phone, tmp_path):
    out = tmp_path / "logs"
    res = soak("run", "--target", f"adb:{phone.serial}", "--engine", "test", "--iterations", "8",
               "--max-new-tokens", "8", "--out", str(out), "--run-id", "crash",
               "--fault-plan", soak.plan("crash", [{"kind": "crash", "at": 3, "in": "soak_test_softmax_inside"}]))
    assert res.returncode == 0, res.stderr
    run = out / "crash"
    crash = [f for f in events(run, {"fault"}) if f["kind"] == "crash"]
    assert len(crash) == 1 and crash[0]["iteration"] == 3 and crash[0]["signal"] == "SIGSEGV"
    # soak-runner's handler wrote the frames on the device; they are symbolized from the pushed library
    assert "(soak_test_softmax_inside+" in crash[0]["backtrace"][0], crash[0].get("backtrace")
    from soak.catalog.signature import signature

    assert signature("crash", "decode", crash[0])[1] == "crash/decode: SIGSEGV in soak_test_softmax_inside"
    exits = [e for e in events(run, {"worker_exit"}) if e.get("reason") == "crash"]
    assert exits and exits[0]["signal"] == "SIGSEGV"
    starts = events(run, {"worker_start"})
    assert len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"]
    assert len(events(run, {"iteration"})) == 8
    assert events(run, {"recovery"})[0]["recovered_by"] == "restart"


def test_hang_on_device(soak, phone, tmp_path):
    out = tmp_path / "logs"
    res = soak("run", "--target", f"adb:{phone.serial}", "--engine", "test", "--iterations", "6",
               "--max-new-tokens", "8", "--timeout-respond", "2", "--out", str(out), "--run-id", "hang",
               "--fault-plan", soak.plan("hang", [{"kind": "hang", "at": 2, "seconds": 600}]))
    assert res.returncode == 0, res.stderr
    run = out / "hang"
    hang = [f for f in events(run, {"fault"}) if f["kind"] == "hang"]
    assert len(hang) == 1 and hang[0]["iteration"] == 2
    assert len(events(run, {"worker_start"})) == 2
    assert len(events(run, {"iteration"})) == 6
    # the hung runner was killed on the device, not just abandoned
    first_pid = events(run, {"worker_start"})[0]["pid"]
    gone = soak.lab.adb("-s", phone.serial, "shell", f"test -d /proc/{first_pid} && echo alive || echo gone")
    assert gone.stdout.strip() == "gone"


NASTY = [
    "$(touch /data/local/tmp/pwned) `touch /data/local/tmp/pwned2`; echo hi > /data/local/tmp/pwned3",
    "single ' quote and double \" quote and back\\slash \\n not a newline",
    "real\nnewlines\r\nand\ttabs",
    "nul \x00 inside \x00\x00 twice",
    "| & && || > < >> 2>&1 * ? [a-z] ~ # ! %s %n {} ${HOME} $$ $0",
    "unicode: 你好 🙂 \u202e right-to-left \u200b zero-width",
    "",
]


def _script_run(lab, target: str, out: Path, run_id: str) -> Path:
    """The real soak loop, fed a fixed script of prompts (like `soak replay`)."""
    script = [{"i": i, "conversation": i, "turn": 0, "prompt": p, "max_new_tokens": 12} for i, p in enumerate(NASTY)]
    code = (
        "import json, sys\n"
        "from soak.loop.config import RunConfig\n"
        "from soak.loop.runner import run_soak\n"
        "from soak.targets.adb.target import make_targets\n"
        "script, target, out, run_id = json.loads(sys.argv[1])\n"
        "cfg = RunConfig(engine='test', out_dir=out, run_id=run_id, script=script, quiet=True, target=target)\n"
        "if target == 'local':\n"
        "    run_soak(cfg)\n"
        "else:\n"
        "    from soak.multi_device import run_on_targets\n"
        "    sys.exit(run_on_targets(cfg, [target]))\n"
    )
    argv = [sys.executable, "-c", code, json.dumps([script, target, str(out), run_id])]
    res = subprocess.run(lab.cmd(argv) if target != "local" else argv, env=lab.env(), cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out / run_id


def test_prompts_with_shell_metacharacters_arrive_intact(lab, phone, tmp_path):
    remote = _script_run(lab, f"adb:{phone.serial}", tmp_path, "nasty-adb")
    local = _script_run(lab, "local", tmp_path, "nasty-local")
    on_device = events(remote, {"iteration"})
    on_host = events(local, {"iteration"})
    assert [e["prompt"] for e in on_device] == NASTY
    # the test engine's output is a hash of the exact prompt bytes: same output = same bytes
    assert [e["output"] for e in on_device] == [e["output"] for e in on_host]
    assert [e["prompt_tokens"] for e in on_device] == [1 + len(p.encode()) // 4 for p in NASTY]
    probe = lab.adb("-s", phone.serial, "shell", "ls /data/local/tmp/pwned* 2>/dev/null | wc -l")
    assert probe.stdout.strip() == "0"


def test_two_devices_at_once(lab, soak, tmp_path):
    a = lab.add_device("pair-a")
    b = lab.add_device("pair-b", props={"ro.product.model": "Other Phone"})
    out = tmp_path / "logs"
    res = soak("run", "--target", f"adb:{a.serial}", "--target", f"adb:{b.serial}", "--engine", "test",
               "--iterations", "10", "--max-new-tokens", "8", "--out", str(out), "--run-id", "pair",
               "--fault-plan", soak.plan("crash", [{"kind": "crash", "at": 4}]))
    assert res.returncode == 0, res.stderr
    combined = json.loads((out / "pair" / "combined.json").read_text())
    assert combined["totals"]["devices"] == 2 and combined["totals"]["iterations"] == 20
    assert combined["totals"]["faults_by_kind"]["crash"] == 2
    models = set()
    for entry in combined["devices"]:
        run = Path(entry["run_dir"])
        assert len(events(run, {"iteration"})) == 10
        models.add(json.loads((run / "manifest.json").read_text())["host"]["model"])
    assert models == {"Fake Phone", "Other Phone"}
    # they really overlapped in time
    spans = []
    for entry in combined["devices"]:
        evs = events(Path(entry["run_dir"]), {"run_start", "run_end"})
        spans.append((evs[0]["ts"], evs[-1]["ts"]))
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]


def test_engine_lib_with_model_folder_pushes_only_what_changed(soak, phone, lab, tmp_path):
    """--engine lib + a model folder (MNN layout): the folder goes along, and a
    changed config.json does not push the big weights again."""
    import hashlib
    import os

    from soak.native_build import ensure_built

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"seed": 1, "faults": []}))
    (model / "llm.mnn").write_bytes(os.urandom(4096))
    weight = os.urandom(12 << 20)  # big enough for progress output
    (model / "llm.mnn.weight").write_bytes(weight)
    (model / "tokenizer.txt").write_text("tok\n")
    (model / "notes.md").write_text("not a model file\n")
    lib = str(ensure_built("soak_test_engine"))
    out = tmp_path / "logs"
    first = soak("run", "--target", f"adb:{phone.serial}", "--engine", "lib", "--engine-lib", lib, "--model",
                 str(model), "--iterations", "3", "--out", str(out), "--run-id", "m1")
    assert first.returncode == 0, first.stderr
    assert "pushing llm.mnn.weight 100%" in first.stderr
    push1 = events(out / "m1", {"device_push"})[0]
    remote = push1["remote"]
    sums = lab.adb("-s", phone.serial, "shell", f"cd {remote}/model && ls && sha256sum llm.mnn.weight")
    assert hashlib.sha256(weight).hexdigest() in sums.stdout
    assert "tokenizer.txt" in sums.stdout and "notes.md" not in sums.stdout

    (model / "config.json").write_text(json.dumps({"seed": 2, "faults": []}))
    second = soak("run", "--target", f"adb:{phone.serial}", "--engine", "lib", "--engine-lib", lib, "--model",
                  str(model), "--iterations", "3", "--out", str(out), "--run-id", "m2")
    assert second.returncode == 0, second.stderr
    push2 = events(out / "m2", {"device_push"})[0]
    assert push2["bundle"] != push1["bundle"]
    assert push2["pushed_files"] == 1 and push2["pushed_bytes"] < 100  # only config.json
    assert "pushing llm.mnn.weight" not in second.stderr

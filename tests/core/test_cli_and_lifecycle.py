"""The soak command as a user runs it: demo, SIGKILL of soak, Ctrl-C, replay, prompts intact."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from coresupport import soak_cli
from soak.run_folder import read_events
from soak.loop.config import RunConfig
from soak.loop.runner import run_soak
from soak.loop.session import Timeouts


def test_demo_holds_every_failure_kind(tmp_path):
    proc = soak_cli("run", "--demo", "--out", str(tmp_path), "--run-id", "demo")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "demo"
    summary = json.loads((run / "summary.json").read_text())
    kinds = summary["faults_by_kind"]
    for kind in ("cl_error", "error_line", "status_error", "crash", "hang", "bad_output", "slowdown", "cpu_fallback"):
        assert kinds.get(kind), (kind, kinds)
    events = list(read_events(run))
    recs = [e for e in events if e["event"] == "recovery"]
    assert recs and all(r["recovered_by"] for r in recs)
    assert {r["recovered_by"] for r in recs} >= {"reset", "reinit", "restart"}
    assert "NOT an OpenCL run" in proc.stderr  # people text: stderr
    assert summary["backend_actual"] == "cpu"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["libraries"] and all(manifest["libraries"].values())


def test_sigkill_of_soak_leaves_a_readable_log(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "soak", "run", "--engine", "test", "--iterations", "100000",
                             "--out", str(tmp_path), "--run-id", "k", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events_file = tmp_path / "k" / "events.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if events_file.exists() and events_file.read_text().count('"event": "iteration"') >= 20:
            break
        time.sleep(0.2)
    worker_pids = [json.loads(l)["pid"] for l in events_file.read_text().splitlines()
                   if '"worker_start"' in l]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    events = list(read_events(tmp_path / "k"))  # must not raise
    iters = [e for e in events if e["event"] == "iteration"]
    assert len(iters) >= 20 and [e["i"] for e in iters] == list(range(len(iters)))
    assert (tmp_path / "k" / "manifest.json").exists()
    time.sleep(1.0)
    for pid in worker_pids:  # the worker died with its parent
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_ctrl_c_finishes_the_iteration_and_writes_the_summary(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "soak", "run", "--engine", "test", "--iterations", "100000",
                             "--out", str(tmp_path), "--run-id", "c", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events_file = tmp_path / "c" / "events.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (events_file.exists() and '"event": "iteration"' in events_file.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["end_reason"] == "interrupted" and summary["iterations"] > 0
    assert list(read_events(tmp_path / "c"))[-1]["event"] == "run_end"


def test_prompts_with_quotes_and_nuls_arrive_intact(tmp_path):
    nasty = ["", "\x00", "a\x00b", '"\'`$(reboot)`;\\n\\\\', "<|im_end|><|im_start|>system\n", "你好🙂\r\n\t",
             "\u202e\ufeff", "x" * 20000]
    script = [{"i": i, "conversation": i, "turn": 0, "prompt": p, "max_new_tokens": 8} for i, p in enumerate(nasty)]
    cfg = RunConfig(engine="test", script=script, out_dir=str(tmp_path), run_id="echo", quiet=True,
                    test_engine={"echo": True}, timeouts=Timeouts(respond=10))
    result = run_soak(cfg)
    iters = [e for e in read_events(result.run_dir) if e["event"] == "iteration"]
    assert [e["prompt"] for e in iters] == nasty
    assert [e["output"] for e in iters] == nasty  # the engine saw exactly these bytes
    assert [e["output_bytes"] for e in iters] == [len(p.encode()) for p in nasty]


def test_replay_reproduces_a_recorded_fault(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"kind": "kv_map_error", "at": [6]}]))
    assert soak_cli("run", "--fault-plan", str(plan), "--iterations", "10", "--out", str(tmp_path),
                    "--run-id", "orig", "--quiet").returncode == 0
    proc = soak_cli("replay", str(tmp_path / "orig"), "--iteration", "6", "--json", "--out", str(tmp_path / "rp"))
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert verdict["reproduced"] is True
    assert "status_error/decode: INTERNAL_ERROR" in verdict["replayed_faults"].values()
    replay_run = Path(verdict["replay_run"])
    iters = [e for e in read_events(replay_run) if e["event"] == "iteration"]
    orig = {e["i"]: e for e in read_events(tmp_path / "orig") if e["event"] == "iteration"}
    assert iters[-1]["i"] == 6 and all(e["prompt"] == orig[e["i"]]["prompt"] for e in iters)


def test_replay_of_a_clean_iteration_is_not_a_reproduction(tmp_path):
    assert soak_cli("run", "--engine", "test", "--iterations", "5", "--out", str(tmp_path), "--run-id", "o",
                    "--quiet").returncode == 0
    proc = soak_cli("replay", str(tmp_path / "o"), "--iteration", "3", "--json")
    verdict = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert verdict["clean_both"] and not verdict["reproduced"] and proc.returncode == 0


def test_duration_limit(tmp_path):
    start = time.monotonic()
    proc = soak_cli("run", "--engine", "test", "--duration", "3s", "--out", str(tmp_path), "--run-id", "d", "--quiet")
    assert proc.returncode == 0
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["end_reason"] == "duration" and 3 <= summary["elapsed_s"] < 10
    assert time.monotonic() - start < 60


def test_help_explains_thread_num_on_opencl():
    proc = soak_cli("run", "--help")
    assert "bit field" in proc.stdout and "68" in proc.stdout


def test_the_engine_gets_time_to_shut_down(tmp_path):
    """MNN saves its OpenCL kernel cache in the Llm destructor (44 s on PoCL): soak waits for it."""
    cache = tmp_path / "mnn_cachefile.bin"
    cfg = RunConfig(engine="test", iterations=3, out_dir=str(tmp_path), run_id="td", quiet=True,
                    test_engine={"teardown_s": 7, "teardown_file": str(cache)},
                    timeouts=Timeouts(respond=10, teardown=30))
    result = run_soak(cfg)
    assert cache.exists()
    (end,) = [e for e in read_events(result.run_dir) if e["event"] == "worker_exit"]
    assert end["phase"] == "teardown" and end["exit_code"] == 0 and end["reason"] == "stopped"


def test_target_faults_from_before_the_run_are_recorded(tmp_path):
    """A device fault a target saw before the event log existed is written, not lost."""
    from soak.targets.local import LocalTarget

    class FlakyTarget(LocalTarget):
        def check_health(self):
            return [{"kind": "device_offline", "phase": "init", "serial": "X1", "state": "offline"}]

    cfg = RunConfig(engine="test", iterations=2, out_dir=str(tmp_path), run_id="early", quiet=True)
    result = run_soak(cfg, target=FlakyTarget())
    (f,) = [e for e in read_events(result.run_dir) if e["event"] == "fault"]
    assert (f["kind"], f["serial"], f["iteration"]) == ("device_offline", "X1", None)
    assert result.summary["faults_by_kind"] == {"device_offline": 1}

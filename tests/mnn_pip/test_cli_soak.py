"""Real soaks through the soak CLI on pip MNN with the committed tiny models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from soak.run_folder import read_events
from soak.loop.config import RunConfig
from soak.loop.runner import run_soak

HARD = {"crash", "hang", "status_error"}


def kinds(events, kind):
    return [e for e in events if e["event"] == kind]


def test_soak_run_tiny_model_60_iterations(tmp_path, tiny_model, cli, net_guard, netns_prefix):
    """60 real MNN iterations, multi-turn, memory and perf recorded; nothing leaves the host
    (audited in every Python process, and run in a private network namespace when allowed)."""
    env, netlog = net_guard
    proc = cli("run", "--engine", "mnn-pip", "--model", tiny_model, "--iterations", 60, "--seed", 1,
               "--thread-num", 1, "--memory-interval", 0.2, "--out", tmp_path, "--run-id", "tiny",
               env=env, prefix=netns_prefix)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = tmp_path / "tiny"
    events = list(read_events(run))
    its = kinds(events, "iteration")
    assert [e["i"] for e in its] == list(range(60))
    assert kinds(events, "run_end")[0]["reason"] == "iterations"

    load = kinds(events, "load")[0]
    assert load["ok"] and load["backend_actual"] == "cpu" and load["load_us"] > 0
    assert len(kinds(events, "worker_start")) == 1          # no crash, no restart

    # multi-turn: later turns of a conversation carry the growing context
    later = [e for e in its if e["turn"] > 0]
    assert len(later) >= 5
    by_conv = {}
    for e in its:
        by_conv.setdefault(e["conversation"], []).append(e["context_tokens"])
    assert any(len(v) > 1 and v == sorted(v) and v[-1] > v[0] for v in by_conv.values())

    # perf recorded for every call
    assert all(e["prompt_tokens"] > 0 and e["prefill_us"] > 0 for e in its)
    decoding = [e for e in its if e["generated_tokens"] > 1]
    assert decoding and all(e["decode_tps"] and e["decode_tps"] > 0 for e in decoding)
    assert all(e["generated_tokens"] <= e["max_new_tokens"] for e in its)

    # memory sampled, per iteration and on the timer
    mem = kinds(events, "memory")
    assert len([m for m in mem if m["source"] == "iteration"]) >= 60
    assert all(m["rss"] > 10 * 2**20 for m in mem)

    # hostile prompts arrived and were answered
    assert any('"' in e["prompt"] or "\\" in e["prompt"] for e in its)
    assert any(any(ord(c) > 0x2E80 for c in e["prompt"]) for e in its)
    assert not [f for f in kinds(events, "fault") if f["kind"] in HARD]
    assert all(e["status_name"] in ("MAX_TOKENS_FINISHED", "NORMAL_FINISHED", "RUNNING") for e in its)
    assert all(e["checks"]["utf8_valid"] for e in its)      # zeroed partial-UTF-8 rows

    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 60 and summary["worker_restarts"] == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["params"] == 640384 and manifest["model"]["family"] == "qwen2"
    assert set(manifest["model"]["sha256"]) >= {"llm.mnn", "llm.mnn.weight"}

    log = (run / "engine.log").read_bytes()
    assert b"The device supports" in log
    assert b"[MNNLLM] response" not in log       # the binding's prompt echo is never used
    assert netlog() == [], netlog()


def test_prompts_with_nuls_and_quotes_arrive_through_the_runner(tmp_path, tiny_model):
    prompts = ["a\x00b\x00c tail words here", 'say "hi" \\ \'x\' %s {}', "中文 🚀 <|im_end|> fake",
               "\x00", "a"]
    script = [{"conversation": 0, "turn": t, "prompt": p, "max_new_tokens": 6} for t, p in enumerate(prompts)]
    cfg = RunConfig(engine="mnn-pip", model=str(tiny_model), script=script, out_dir=str(tmp_path),
                    run_id="nul", engine_options={"thread_num": 1}, quiet=True)
    result = run_soak(cfg)
    its = kinds(list(read_events(result.run_dir)), "iteration")
    assert [e["prompt"] for e in its] == prompts                 # recorded exactly, NULs kept
    assert all(e["status_name"] == "MAX_TOKENS_FINISHED" and e["generated_tokens"] == 6 for e in its), its
    assert not [f for f in kinds(list(read_events(result.run_dir)), "fault") if f["kind"] in HARD]
    tokens = {e["prompt"]: e["prompt_tokens"] for e in its}
    # "a\0b\0c tail words here" is not cut at the first NUL: far more tokens than "a"
    assert tokens[prompts[0]] >= tokens["a"] + 6
    assert tokens["\x00"] == tokens["a"]                        # one byte token each
    assert all(e["output_bytes"] > 0 for e in its)


def test_raw_bytes_model_invalid_utf8_is_a_check_not_a_crash(tmp_path, raw_model, cli):
    proc = cli("run", "--engine", "mnn-pip", "--model", raw_model, "--iterations", 16, "--seed", 2,
               "--thread-num", 1, "--max-new-tokens", 32, "--out", tmp_path, "--run-id", "raw", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = list(read_events(tmp_path / "raw"))
    its = kinds(events, "iteration")
    assert len(its) == 16
    invalid = [e for e in its if not e["checks"]["utf8_valid"]]
    assert len(invalid) >= 3
    assert all("\ufffd" in e["output"] and e["output_bytes"] > 0 for e in invalid)
    bad = [f for f in kinds(events, "fault") if f["kind"] == "bad_output"]
    assert any("invalid_utf8" in f["symptoms"] for f in bad)
    assert not [f for f in kinds(events, "fault") if f["kind"] in HARD]
    assert len(kinds(events, "worker_start")) == 1


def test_gpu_backend_with_pip_mnn_is_exit_3_naming_the_fix(tmp_path, tiny_model, cli):
    proc = cli("run", "--engine", "mnn-pip", "--model", tiny_model, "--backend", "opencl",
               "--iterations", 1, "--out", tmp_path)
    assert proc.returncode == 3
    assert "CPU only" in proc.stderr and "--engine mnn" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_model_path_is_exit_3(tmp_path, cli):
    proc = cli("run", "--engine", "mnn-pip", "--model", tmp_path / "missing" / "config.json",
               "--iterations", 1, "--out", tmp_path)
    assert proc.returncode == 3 and "--model" in proc.stderr and "Traceback" not in proc.stderr


def test_importing_and_running_pip_mnn_makes_no_network_call(tmp_path, tiny_model, net_guard):
    """PyMnnEngine end to end, and MNN.tools imported after soak's guard: no pip, no sockets."""
    env, netlog = net_guard
    code = f"""
import sys
from soak.engine.pymnn import PyMnnEngine
e = PyMnnEngine({str(tiny_model)!r}); e.set_config('{{"thread_num": 1}}'); e.load(); e.respond(b"hi", 4)
assert "MNN.tools" not in sys.modules and "aliyun" not in sys.modules
import MNN.tools.mnnconvert as conv
assert conv.mnn_logger is None, conv.mnn_logger
assert "aliyun" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert netlog() == [], netlog()


def test_mnn_tools_without_the_guard_tries_to_pip_install(tmp_path, net_guard):
    """Why the guard exists: MNN.tools' import runs `pip install -U aliyun-log-python-sdk`.
    Here os.system is a recorder that runs nothing, so nothing is installed or sent."""
    env, netlog = net_guard
    code = """
import os, socket
calls = []
os.system = lambda cmd: calls.append(cmd) or 1
def refuse(self, addr):
    raise OSError("test: network refused")
socket.socket.connect = refuse
import MNN.tools
print("CALLS", calls)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pip install -U aliyun-log-python-sdk" in proc.stdout


def test_the_network_audit_does_catch_a_connect(tmp_path, net_guard):
    """The audit above can fail: a UDP connect to TEST-NET (sends no packet) is recorded."""
    env, netlog = net_guard
    code = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('192.0.2.1', 9))"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=60,
                   env={**os.environ, **env})
    assert [r["event"] for r in netlog()] == ["socket.connect"]

"""`soak repro` on the test engine (issue 24): a fault that needs state reduces to exactly its
minimum, a 0.3-probability fault reports its reliability and still reduces, a memory cause
reduces to the fewest conversations; what it writes (repro.json for the history, the script
`soak replay` runs, repro.md, the bundle) and the seam soak.rerun uses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from soak import run_folder
from soak.judges import run_judged
from soak.loop.config import RunConfig
from soak.run_folder import read_events

REPO = Path(__file__).resolve().parents[2]
FAST = {"zero_work": True}   # the test engine's speed setting: no sleeping
STATEFUL = [{"kind": "kv_map_error", "turns_before": 2, "resets_before": 2, "prompt_over": 30}]
PROMPT_OVER = 30


def soak_run(tmp_path: Path, run_id: str, plan: list, iterations: int, max_turns: int, seed: int = 0) -> Path:
    cfg = RunConfig(engine="test", iterations=iterations, max_turns=max_turns, max_new_tokens=16, fault_plan=plan,
                    test_engine=dict(FAST), out_dir=str(tmp_path), run_id=run_id, quiet=True, seed=seed,
                    memory_interval_s=0.5)
    return Path(run_judged(cfg).run_dir)


def soak(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "soak", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def iterations(run_dir: Path) -> list[dict]:
    return sorted(read_events(run_dir, {"iteration"}), key=lambda e: e["i"])


def result_of(run_dir: Path, key: str) -> dict:
    return json.loads((run_dir / run_folder.REPRO / key / run_folder.REPRO_RESULT).read_text())


def script_of(run_dir: Path, key: str) -> list[dict]:
    return json.loads((run_dir / run_folder.REPRO / key / run_folder.REPRO_SCRIPT).read_text())["turns"]


def test_a_fault_that_needs_state_reduces_to_exactly_its_minimum(tmp_path):
    """Fires only on the third turn of a conversation whose prompt exceeds 30 tokens, after two
    earlier conversations: the minimum is three conversations (one turn, one turn, three turns)
    and a last prompt of exactly 120 bytes (1 + 120/4 = 31 tokens > 30)."""
    run = soak_run(tmp_path, "state", STATEFUL, iterations=40, max_turns=5)
    its = iterations(run)
    first = next(e for e in its if e["failures"])
    assert first["turn"] >= 2 and first["conversation"] >= 2 and first["prompt_tokens"] > PROMPT_OVER
    t0 = time.monotonic()
    proc = soak("repro", str(run), "--quiet", cwd=tmp_path)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    key = "soak-kv-cache-growth-failure"
    turns = script_of(run, key)
    # exactly the minimum: 3 conversations; 1 + 1 + 3 turns; the target is the failing iteration
    by_conv = [sum(1 for t in turns if t["conversation"] == c) for c in range(3)]
    assert by_conv == [1, 1, 3] and len(turns) == 5, turns
    assert turns[-1]["i"] == first["i"]
    assert len(turns[-1]["prompt"].encode()) == 4 * PROMPT_OVER, turns[-1]      # shortest that still fails
    assert all(len(t["prompt"]) <= 1 for t in turns[:-1]), turns                # the others: nothing left
    assert all(t["max_new_tokens"] <= 1 for t in turns), turns
    assert set(turns[-1]["prompt"]) <= set("abcdefghijklmnopqrstuvwxyz "), turns[-1]  # shrunk, not only cut
    res = result_of(run, key)
    assert res["stopped"] == "done" and res["reliability"]["recurred"] == res["reliability"]["runs"] == 10
    assert res["window"]["target_iteration"] == first["i"] and res["window"]["size"]["conversations"] == 3
    assert [s["step"] for s in res["steps"]][:2] == ["window", "alone"]
    assert not next(s for s in res["steps"] if s["step"] == "alone")["accepted"]  # alone: no failure
    assert res["fault_rule"] == {"test_engine_plan": STATEFUL}
    assert res["elapsed_s"] < 600   # within the default budget (--budget 10m)
    # the history reads it (soak.history.read_repro)
    from soak.history import read_repro

    rows = read_repro(run)
    assert rows == [{"key": key, "attempts": 10, "reproduced": 10, "path": f"{run_folder.REPRO}/{key}",
                     "command": rows[0]["command"]}] and rows[0]["command"].startswith("soak repro ")
    md = (run / run_folder.REPRO / key / run_folder.REPRO_README).read_text()
    assert "reliability **10 of 10**" in md and "soak replay" in md
    # the reproducer replays with soak replay, and the cause comes back
    proc = soak("replay", str(run / run_folder.REPRO / key), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = json.loads(proc.stdout)
    assert verdict["reproduced"] and verdict["turns_replayed"] == 5
    # the bundle carries the reproducer (not its run folders)
    proc = soak("bundle", str(run), "-o", str(tmp_path / "b.tar.gz"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith(f"/{run_folder.REPRO}/{key}/{run_folder.REPRO_SCRIPT}") for n in names)
    assert any(n.endswith(f"/{run_folder.REPRO}/{run_folder.REPRO_META}") for n in names)
    assert not any(run_folder.REPRO_RUNS in n for n in names)
    print(f"stateful fault: reduced in {took:.1f} s")


def test_a_flaky_fault_reports_its_reliability_and_still_reduces(tmp_path):
    """probability 0.3 on the second turn on: the reliability over 40 runs is 0.3 +- 0.15, and the
    workload still reduces to one conversation of two turns."""
    run = soak_run(tmp_path, "flaky", [{"kind": "kv_map_error", "probability": 0.3, "turns_before": 1}],
                   iterations=12, max_turns=3)
    proc = soak("repro", str(run), "--quiet", "--runs", "40", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    key = "soak-kv-cache-growth-failure"
    res = result_of(run, key)
    rel = res["reliability"]
    assert rel["runs"] == 40 and abs(rel["value"] - 0.3) <= 0.15, rel
    turns = script_of(run, key)
    assert len(turns) == 2 and {t["conversation"] for t in turns} == {0}, turns
    assert res["minimal"]["size"]["prompt_chars"] < res["window"]["size"]["prompt_chars"]
    # a flaky cause is given several runs before a candidate is dropped
    assert max(s["attempts"] for s in res["steps"] if s["step"] not in ("window", "reliability")) > 1


def test_a_memory_cause_reduces_to_the_fewest_conversations(tmp_path):
    """16 MiB never given back on the third turn of a conversation (seed 1: three such turns in
    thirteen conversations): half the bytes take two conversations of three turns."""
    run = soak_run(tmp_path, "memory", [{"kind": "leak", "bytes": 16 << 20, "turns_before": 2}],
                   iterations=24, max_turns=3, seed=1)
    its = iterations(run)
    leaking = sum(1 for e in its if e["turn"] == 2)
    assert leaking == 3 and len({e["conversation"] for e in its}) > 5
    proc = soak("repro", str(run), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cls = json.loads((run / run_folder.CLASSIFICATION).read_text())
    key = cls["causes"][0]["fault_id"]
    assert cls["causes"][0]["kind"] in ("memory_kept", "memory_growth"), cls["causes"][0]
    res = result_of(run, key)
    need = math.ceil(leaking * res["memory"]["share"])
    turns = script_of(run, key)
    convs = {t["conversation"] for t in turns}
    assert len(convs) == need == 2, turns
    assert all(sum(1 for t in turns if t["conversation"] == c) == 3 for c in convs), turns
    assert res["reliability"]["recurred"] == res["reliability"]["runs"]
    assert all(b >= res["memory"]["target_bytes"] for b in res["memory"]["best_bytes"])


def test_a_memory_ratchet_reduces_to_the_longest_conversation(tmp_path):
    """The test engine's pool keeps 64 KiB per token of the longest context (MNN's pools keep their
    high-water mark): the classifier calls it a ratchet, and half its bytes need one conversation,
    the longest, cut to the turns and prompt bytes that still reach half the high water."""
    cfg = RunConfig(engine="test", iterations=30, max_turns=4, max_new_tokens=16, seed=0, quiet=True,
                    test_engine=dict(FAST, kv_pool_bytes_per_token=65536), out_dir=str(tmp_path), run_id="ratchet",
                    memory_interval_s=0.5)
    run = Path(run_judged(cfg).run_dir)
    cls = json.loads((run / run_folder.CLASSIFICATION).read_text())
    assert cls["causes"][0]["fault_id"] == "soak-memory-ratchet", cls["causes"][0]
    its = iterations(run)
    longest = max(its, key=lambda e: e["context_tokens"])
    proc = soak("repro", str(run), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = result_of(run, "soak-memory-ratchet")
    turns = script_of(run, "soak-memory-ratchet")
    assert {t["conversation"] for t in turns} == {0}, turns                     # the fewest: one
    conv_of = {e["i"]: e["conversation"] for e in its}
    assert {conv_of[t["i"]] for t in turns} == {longest["conversation"]}, turns  # the longest one
    assert res["window"]["size"]["conversations"] > 5
    assert res["minimal"]["size"]["prompt_chars"] < res["window"]["size"]["prompt_chars"] / 2
    # cut to the share's edge, so RSS noise of a few pages decides now and then
    assert res["reliability"]["value"] >= 0.5, res["reliability"]


def test_the_rerun_seam_uses_the_reproducer(tmp_path):
    """soak.rerun (soak gate --rerun-unexpected) re-runs a cause through soak.repro.replay_cause:
    the iteration's conversation until `soak repro` made a reproducer, then the reproducer."""
    from soak.repro import pick_cause, replay_cause
    from soak.rerun import rerun_once

    run = soak_run(tmp_path, "seam", [{"kind": "kv_map_error", "at": [3]}], iterations=6, max_turns=3)
    cause = pick_cause(run, None)
    got = rerun_once(run, cause, tmp_path / "reruns")
    assert got["recurred"] and got["how"] == "iteration replay" and Path(got["run_dir"]).is_dir()
    proc = soak("repro", str(run), "--quiet", "--runs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = replay_cause(run, cause, tmp_path / "reruns")
    assert got["recurred"] and got["how"] == "repro"
    turns = [e for e in read_events(Path(got["run_dir"]), {"iteration"})]
    assert [e["i"] for e in turns] == [3]   # the reproducer's one turn, not the conversation
    assert rerun_once(run, cause, tmp_path / "reruns")["how"] == "repro"


def test_bad_input(tmp_path):
    run = soak_run(tmp_path, "clean", [], iterations=3, max_turns=2)
    proc = soak("repro", str(run), cwd=tmp_path)
    assert proc.returncode == 3 and "no root cause" in proc.stderr and "Traceback" not in proc.stderr
    proc = soak("repro", str(tmp_path / "nothing"), cwd=tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    run = soak_run(tmp_path, "one", [{"kind": "kv_map_error", "at": [1]}], iterations=3, max_turns=2)
    for args, text in ((["--cause", "7"], "rows 1..1"), (["--cause", "sig-nope"], "not a root cause"),
                       (["--budget", "soon"], "bad duration"), (["--runs", "0"], "--runs")):
        proc = soak("repro", str(run), *args, cwd=tmp_path)
        assert proc.returncode == 3 and text in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def test_ddmin_and_gpu_modes():
    from soak.repro import ddmin, gpu_mode_variants, shrink_length, simpler_text, wilson_low

    need = {3, 7}
    assert ddmin(list(range(10)), lambda xs: need <= set(xs)) == [3, 7]
    assert shrink_length(234, lambda n: n >= 120) == 120
    assert simpler_text("Why? 你好 GPU!") == "whya aa gpua"
    # MNN's GPU mode 68 = buffer + wide tuning: the simpler modes are no tuning (65) and image (132)
    assert [m for m, _ in gpu_mode_variants(68)] == [65, 132]
    assert wilson_low(10, 10) > 0.85 and wilson_low(3, 10) < 0.3


def test_the_mnn_reproducer_of_an_engine_lib_run_names_mnns_libraries(tmp_path, monkeypatch):
    """--engine lib (a prebuilt MNN, no build folder): the reproducer finds MNN's libraries beside
    the backend plugin, puts them on llm_demo's LD_LIBRARY_PATH and links the C++ program against
    them; folders soak does not know ($MNN_SOURCE) stay for the shell to expand."""
    from soak.outputs.repro_files import write_mnn_reproducer

    lib = tmp_path / "mnn lib"
    lib.mkdir()
    for name in ("libllm.so", "libMNN.so", "libMNN_CL.so"):
        (lib / name).write_bytes(b"")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"llm_model": "llm.mnn"}')
    monkeypatch.delenv("SOAK_MNN_SOURCE", raising=False)
    cfg = RunConfig(engine="lib", model=str(model / "config.json"), backend="cpu", plugins=[str(lib / "libMNN_CL.so")],
                    engine_options={"thread_num": 2})
    cfg.script = [{"i": 0, "conversation": 0, "turn": 0, "prompt": "hello", "max_new_tokens": 4}]
    one = write_mnn_reproducer(tmp_path / "one", cfg)
    assert one["env"]["LD_LIBRARY_PATH"].split(os.pathsep)[-1] == str(lib)
    assert one["llm_demo"].startswith("LD_LIBRARY_PATH=") and " llm_demo config.json prompt-1.txt 4" in one["llm_demo"]
    cfg.script.append({"i": 1, "conversation": 1, "turn": 0, "prompt": "again", "max_new_tokens": 3})
    two = write_mnn_reproducer(tmp_path / "two", cfg)
    assert f"'-L{lib}'" in two["build"] and f"'-Wl,-rpath,{lib}'" in two["build"]
    assert '"-I$MNN_SOURCE/include"' in two["build"]
    # the shell expands the placeholder: a dry run of the build line with g++ replaced by echo
    proc = subprocess.run(["sh", "-c", two["build"].replace("g++", "echo", 1)], capture_output=True, text=True,
                          env=dict(os.environ, MNN_SOURCE="/opt/mnn"))
    assert "-I/opt/mnn/include" in proc.stdout and f"-L{lib}" in proc.stdout

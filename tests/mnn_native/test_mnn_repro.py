"""`soak repro` on a hand-built MNN, OpenCL on PoCL through soak's interposer (issue 24): an
injected allocation failure at forward and a persistent enqueue failure each reduce to one
iteration, and the standalone llm_demo reproducer, run by hand with the interposer environment
it names (no soak), shows the same failure.

Needs SOAK_MNN_BUILD (+ SOAK_MNN_SOURCE) and PoCL; kernel caches as in test_mnn_soak_run.py
(the first OpenCL run builds MNN's kernels: minutes; warm, a run takes seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soak import run_folder

pytestmark = [
    pytest.mark.mnn_native,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("SOAK_MNN_BUILD"),
                       reason="needs a hand-built MNN: set SOAK_MNN_BUILD (and SOAK_MNN_SOURCE)"),
]

REPO = Path(__file__).resolve().parents[2]
# The tiny model's load makes 55 clCreateBuffer calls: the 56th is the first of the first forward.
ALLOC_AT_FORWARD = "clCreateBuffer=-4@nth:56"
ENQUEUE_FROM = "clEnqueueNDRangeKernel=-5@from:500"   # every kernel launch from the 500th: persistent


def soak(tmp_path, *args, env, timeout=1800):
    full = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    return subprocess.run([sys.executable, "-m", "soak", *args], cwd=tmp_path, env=full, capture_output=True,
                          text=True, timeout=timeout)


def faulty_run(tmp_path, tiny_model, pocl_caches, rule: str) -> tuple[Path, dict]:
    env = {"POCL_CACHE_DIR": str(pocl_caches / "pocl"), "POCL_WORK_GROUP_METHOD": "cbs"}
    proc = soak(tmp_path, "run", "--engine", "mnn", "--model", str(tiny_model), "--backend", "opencl",
                "--thread-num", "68", "--cl-gpu-override", "--tmp-path", str(pocl_caches / "mnn"),
                "--iterations", "4", "--max-new-tokens", "8", "--seed", "3", "--quiet", "--out",
                str(tmp_path / "logs"), "--run-id", "r", "--timeout-respond", "600", "--cl-fault", rule, env=env)
    run = tmp_path / "logs" / "r"
    assert (run / run_folder.SUMMARY).exists(), proc.stdout + proc.stderr
    return run, env


def reduce(tmp_path, run: Path, env: dict) -> tuple[dict, list[dict], Path]:
    proc = soak(tmp_path, "repro", str(run), "--budget", "8m", "--runs", "3", "--quiet", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((run / run_folder.REPRO / run_folder.REPRO_META).read_text())
    folder = run / meta["causes"][0]["path"]
    result = json.loads((folder / run_folder.REPRO_RESULT).read_text())
    turns = json.loads((folder / run_folder.REPRO_SCRIPT).read_text())["turns"]
    return result, turns, folder


def by_hand(folder: Path, env: dict) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """run.sh as a maintainer runs it: sh, the environment it names, no soak on PYTHONPATH."""
    mnn = folder / run_folder.REPRO_MNN
    trace = mnn / run_folder.CL_TRACE
    trace.unlink(missing_ok=True)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_PRELOAD", "LD_LIBRARY_PATH")}
    proc = subprocess.run(["sh", str(mnn / "run.sh")], env=dict(clean, **env), capture_output=True, text=True,
                          timeout=900)
    records = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()] if trace.exists() else []
    return proc, records


def test_alloc_failure_at_forward_reduces_to_one_iteration(tmp_path, tiny_model, pocl_caches):
    run, env = faulty_run(tmp_path, tiny_model, pocl_caches, ALLOC_AT_FORWARD)
    result, turns, folder = reduce(tmp_path, run, env)
    assert result["stopped"] == "done" and len(turns) == 1, result
    assert result["reliability"]["recurred"] == result["reliability"]["runs"] == 3
    assert result["fault_rule"]["cl_faults"] == ALLOC_AT_FORWARD
    demo = result["mnn_reproducer"]["llm_demo"]
    assert "llm_demo config.json prompt-1.txt" in demo and "SOAK_CL_FAULTS=" in demo
    proc, records = by_hand(folder, env)
    out = proc.stdout + proc.stderr
    assert "Alloc Buffer" in out and "error, code:-4" in out, out[-3000:]
    injected = [r for r in records if r.get("type") == "error" and r.get("injected")]
    assert injected and injected[0]["api"] == "clCreateBuffer" and injected[0]["index"] == 56, records[:5]


def test_persistent_enqueue_failure_reduces_to_one_iteration(tmp_path, tiny_model, pocl_caches):
    run, env = faulty_run(tmp_path, tiny_model, pocl_caches, ENQUEUE_FROM)
    result, turns, folder = reduce(tmp_path, run, env)
    assert result["stopped"] == "done" and len(turns) == 1, result
    assert result["reliability"]["recurred"] == result["reliability"]["runs"] == 3
    # the rule was narrowed to the one call that matters, or said why not
    assert any("clEnqueueNDRangeKernel" in fact for fact in result["learnt"]), result["learnt"]
    rule = result["fault_rule"]["cl_faults"]
    assert rule.startswith("clEnqueueNDRangeKernel=-5@")
    # the GPU mode bits were tried one at a time from the recorded mode 68
    assert any(fact.startswith("GPU mode 65 ") for fact in result["learnt"])
    assert any(fact.startswith("GPU mode 132 ") for fact in result["learnt"])
    proc, records = by_hand(folder, env)
    out = proc.stdout + proc.stderr
    assert "CL ERROR CODE : -5" in out, out[-3000:]
    assert any(r.get("type") == "error" and r.get("injected") and r.get("api") == "clEnqueueNDRangeKernel"
               for r in records)


def test_the_cpp_reproducer_builds_and_runs_what_llm_demo_cannot(tmp_path, tiny_model):
    """Two conversations (a reset between them) and a prompt with a newline: one llm_demo run
    cannot say that, so the reproducer is a C++ program against MNN's Llm API with its build line."""
    from soak.loop.config import RunConfig
    from soak.outputs.repro_files import write_mnn_reproducer

    cfg = RunConfig(engine="mnn", model=str(tiny_model), backend="cpu", engine_options={"thread_num": 2})
    cfg.script = [{"i": 0, "conversation": 0, "turn": 0, "prompt": "hello", "max_new_tokens": 4},
                  {"i": 1, "conversation": 0, "turn": 1, "prompt": "two\nlines", "max_new_tokens": 4},
                  {"i": 2, "conversation": 1, "turn": 0, "prompt": "again", "max_new_tokens": 3}]
    out = write_mnn_reproducer(tmp_path / "mnn", cfg)
    assert "llm_demo" not in out and out["build"].startswith("g++ ") and "-lllm" in out["build"]
    assert (tmp_path / "mnn" / "prompt-2.txt").read_text() == "two\nlines"
    proc = subprocess.run(["sh", str(tmp_path / "mnn" / "run.sh")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[repro] done: 3 turns" in proc.stdout and "[repro] reset (conversation 1)" in proc.stdout, proc.stdout

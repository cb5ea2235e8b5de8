"""The wrong-answer oracle on a hand-built MNN: OpenCL on PoCL against a CPU reference.

- a clean OpenCL run at precision normal and low gives no wrong_output over >= 100 checked turns;
- a skipped kernel (`clEnqueueNDRangeKernel=skip@kernel:...`) and a NaN-corrupted input write are each
  found at the first checked turn after the injection, under the injected rule as the root cause;
- `clSetKernelArg=-49` (MNN#4653's mechanism: MNN logs it and goes on) is the root cause, with the
  wrong answer in its cascade.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soak.run_folder import read_events

pytestmark = [
    pytest.mark.mnn_native,
    pytest.mark.skipif(not os.environ.get("SOAK_MNN_BUILD"),
                       reason="needs a hand-built MNN: set SOAK_MNN_BUILD (and SOAK_MNN_SOURCE)"),
]

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = ["--seed", "5", "--max-new-tokens", "16"]


def soak(out: Path, *args, env=None, timeout=1800):
    full_env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env or {})
    common = ["--quiet", "--out", str(out)] if args[0] in ("run", "reference") else []
    proc = subprocess.run([sys.executable, "-m", "soak", *args, *common], cwd=out,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("oracle")
    soak(out, "reference", "--engine", "mnn", "--model", str(tiny_model), *WORKLOAD, "--iterations", "110",
         "--run-id", "ref")
    return out / "ref"


def opencl(out, reference, tiny_model, pocl_caches, run_id, *extra, iterations=110):
    soak(out, "run", "--engine", "mnn", "--backend", "opencl", "--cl-gpu-override", "--thread-num", "65",
         "--tmp-path", str(pocl_caches / "mnn"), "--model", str(tiny_model), *WORKLOAD, "--iterations",
         str(iterations), "--run-id", run_id, "--reference", str(reference), *extra,
         env={"POCL_CACHE_DIR": str(pocl_caches / "pocl"), "POCL_WORK_GROUP_METHOD": "cbs"})
    return out / run_id


def oracle_faults(run):
    return [e for e in read_events(run, kinds={"fault"}) if e["kind"] in ("wrong_output", "nonfinite_logits")]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["normal", "low"])
def test_a_clean_opencl_run_agrees_with_the_cpu_reference(tmp_path, reference, tiny_model, pocl_caches, precision):
    run = opencl(tmp_path, reference, tiny_model, pocl_caches, f"clean-{precision}", "--precision", precision)
    turns = list(read_events(run, kinds={"oracle_turn"}))
    assert len(turns) >= 100
    assert oracle_faults(run) == [], [t for t in turns if t["wrong"]]
    # it is the GPU path, not a copy of the CPU: the logits differ a little, as fp32 kernels of another order do
    assert 0 < max(t["abs_max"] for t in turns) < 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["backend_actual"] == "opencl" and summary["oracle"]["wrong"] == 0


def _injected_at(run, api):
    return [e["iteration"] for e in read_events(run, kinds={"cl_call_error"}) if e["api"] == api and e["injected"]]


@pytest.mark.slow
def test_a_skipped_kernel_and_a_corrupted_write_are_found_at_once_and_blamed(tmp_path, reference, tiny_model,
                                                                               pocl_caches):
    run = opencl(tmp_path, reference, tiny_model, pocl_caches, "silent", "--cl-fault",
                 "clEnqueueNDRangeKernel=skip@kernel:gemv_conv_c8_buf,nth:700", "--cl-fault",
                 "clEnqueueWriteBuffer=corrupt:nan:all@nth:150", iterations=12)
    [skipped] = _injected_at(run, "clEnqueueNDRangeKernel")
    [corrupted] = _injected_at(run, "clEnqueueWriteBuffer")
    found = {(f["iteration"], f["kind"]) for f in oracle_faults(run)}
    # no MNN error line: only the oracle sees them, at the turn the injection landed in (NaN in an input
    # write shows as NaN logits or as a wrong answer, depending on which of a forward's writes it hit)
    assert (skipped, "wrong_output") in found, found
    assert {(corrupted, "wrong_output"), (corrupted, "nonfinite_logits")} & found, found
    assert not [e for e in read_events(run, kinds={"fault"}) if e["kind"] == "cl_error"]
    soak(tmp_path, "classify", str(run))
    causes = json.loads((run / "classification.json").read_text())["causes"]
    by_kind = {}
    for c in causes:
        for sub in c.get("cascade") or []:
            by_kind.setdefault(sub.get("kind"), []).append(c)
    blamed = [c for kind in ("wrong_output", "nonfinite_logits") for c in by_kind.get(kind, [])]
    assert {c["signature"] for c in blamed if c.get("injected")} >= {
        c["signature"] for c in causes if c.get("injected")}, causes   # both rules, each with its wrong turn


@pytest.mark.slow
def test_a_failed_set_arg_is_the_root_cause_of_the_wrong_answer(tmp_path, reference, tiny_model, pocl_caches):
    run = opencl(tmp_path, reference, tiny_model, pocl_caches, "setarg", "--cl-fault", "clSetKernelArg=-49@nth:3000",
                 iterations=12)
    [at] = _injected_at(run, "clSetKernelArg")
    wrong = [f["iteration"] for f in oracle_faults(run) if f["kind"] == "wrong_output"]
    assert wrong and wrong[0] == at
    soak(tmp_path, "classify", str(run))
    causes = json.loads((run / "classification.json").read_text())["causes"]
    first = causes[0]
    assert first.get("injected") and "clSetKernelArg" in json.dumps(first)
    assert "wrong_output" in {sub.get("kind") for sub in first.get("cascade") or []}, first

"""What an error record says (info param names, kernel names and sizes) and how errors stay
bounded: each kind counted exactly in the stats file, a few records per poll window, folded by
the reader into one record (and one cl_call_error event) per kind.  On PoCL, real driver errors
and injected ones."""

from __future__ import annotations

import json
import os
import subprocess

from soak.cl import interposer
from soak.cl.trace import SAMPLES, TraceReader
from soak.cl.trace_events import trace_events

CL_DEVICE_NAME = 0x102B
CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV = 0x4000  # NVIDIA only: PoCL answers CL_INVALID_VALUE


def test_failing_info_query_names_its_param(run_workload):
    # a real error from the driver (unknown vendor param) and a real one from a short buffer
    r = run_workload("--probe-param", hex(CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV))
    assert r.result("probe") == [["0x4000", "-30"]]
    (e,) = r.errors(api="clGetDeviceInfo")
    assert (e["code"], e["param"], e["param_name"]) == (-30, 0x4000, "CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV")
    assert e["key"] == "param=CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV" and e["injected"] is False
    r = run_workload("--probe-param", hex(CL_DEVICE_NAME))
    (e,) = r.errors(api="clGetDeviceInfo")
    assert (e["param"], e["param_name"]) == (CL_DEVICE_NAME, "CL_DEVICE_NAME")
    # an injected failure names the param too; a param no header defines is kept as a number
    r = run_workload("--probe-param", "0xdead", options={"faults": "clGetDeviceInfo=-30@nth:1"})
    (first, probe) = r.errors(api="clGetDeviceInfo")
    assert first["injected"] and first["param_name"] == "CL_DEVICE_TYPE"  # the workload's first query
    assert probe["param"] == 0xDEAD and "param_name" not in probe and probe["key"] == "param=0xdead"
    # successful queries leave no record
    assert len(r.of("error")) == 2


def test_failing_ndrange_names_kernel_and_sizes(run_workload):
    r = run_workload("--steps", "1", "--step-calls", "10", options={"faults": "clEnqueueNDRangeKernel=-5@from:4"})
    # NDRange call 1 is the workload's own iteration; the step's calls are 2..11 (sizes 1024, 512, ...)
    assert [w[:2] for w in r.result("step")] == [["1", "failed=8"]]
    (e,) = r.errors(api="clEnqueueNDRangeKernel")
    assert (e["kernel"], e["key"], e["count"], e["code"]) == ("vadd", "kernel=vadd", 8, -5)
    assert [s["gws"] for s in e["samples"]] == [[1024], [512], [1024]]  # no local size given
    assert all("lws" not in s for s in e["samples"])
    assert [s["index"] for s in e["samples"]] == [4, 5, 6]
    assert e["last_seq"] - e["first_seq"] == 7
    # the cached name survives the kernel's release and a new kernel at the same address
    assert r.stats["objects"]["kernel"]["live"] == 0


def _stepper(cl_build, run_dir, steps: int, calls: int, faults: str, extra_env: dict | None = None):
    env = dict(os.environ)
    env.update(interposer.prepare({"faults": faults}, run_dir, interposer_dir=cl_build.lib_dir, mnn_paths=()))
    env.update(extra_env or {})
    return subprocess.Popen([str(cl_build.workload), "--steps", str(steps), "--step-calls", str(calls),
                             "--step-sync"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _next_step(proc) -> int:
    for line in proc.stdout:
        w = line.split()
        if w[:2] == ["result", "step"]:
            return int(w[3].split("=")[1])
    raise AssertionError("workload ended early")


def test_counts_exact_and_records_bounded_per_poll(cl_build, tmp_path):
    """A persistent enqueue failure: per window (one reader poll = one soak iteration) one
    cl_call_error event with the exact count, and at most 3 records written."""
    steps, calls = 5, 400
    proc = _stepper(cl_build, tmp_path, steps, calls, "clEnqueueNDRangeKernel=-5@from:150")
    reader, raw = TraceReader(tmp_path), TraceReader(tmp_path)
    seen = []
    try:
        for i in range(steps):
            failed = _next_step(proc)
            written = [r for r in raw.poll_raw() if r["type"] == "error"]
            events = [f for name, f in trace_events(reader.poll(), i) if name == "cl_call_error"]
            seen.append((failed, [e["count"] for e in events], len(written)))
            if events:
                (ev,) = events
                assert ev["iteration"] == i and ev["kernel"] == "vadd" and ev["injected"] is True
                assert ev["call_seq"] == ev["first_seq"] and len(ev["samples"]) == min(SAMPLES, failed)
                assert len(json.dumps(ev)) < 2000
            proc.stdin.write("\n")
            proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    # step 1: NDRange calls 2..401, 150.. fail (252), then every call
    assert seen == [(252, [252], 3)] + [(calls, [calls], 3)] * (steps - 1)
    tail = [f for name, f in trace_events(reader.poll(), steps) if name == "cl_call_error"]
    assert tail == []  # nothing counted twice, nothing left over
    assert reader.stats()["api"]["clEnqueueNDRangeKernel"]["errors"] == 252 + calls * (steps - 1)
    assert (tmp_path / "cl_trace.jsonl").stat().st_size < 20_000


def test_counts_survive_a_crash(run_workload):
    """The counts live in the mapped stats file: a worker that dies keeps them."""
    r = run_workload("--steps", "3", "--step-calls", "200", "--crash", "segv",
                     options={"faults": "clEnqueueNDRangeKernel=-5@every:2"})
    assert r.rc != 0 and not r.stats["exited"]
    (e,) = r.errors(api="clEnqueueNDRangeKernel")
    assert e["count"] == 300 and len(r.of("error")) == SAMPLES


def test_records_without_stats_file_are_each_written_and_folded(run_workload, tmp_path):
    """No stats file (no shared counts): every error is a record, and the reader folds them."""
    r = run_workload("--steps", "1", "--step-calls", "20", options={"faults": "clEnqueueNDRangeKernel=-5@from:11"},
                     env={"SOAK_CL_STATS": ""})
    assert len(r.of("error")) == 11 and all("agg" not in e for e in r.of("error"))  # calls 11..21
    (e,) = r.errors()
    assert e["count"] == 11 and len(e["samples"]) == SAMPLES and e["last_seq"] - e["first_seq"] == 10


def test_event_fields_pass_through():
    recs = [{"type": "error", "pid": 1, "seq": 7, "index": 3, "api": "clX", "code": -5, "injected": 1,
             "new_field": [1, 2], "count": 4, "first_seq": 7, "last_seq": 20, "samples": []},
            {"type": "alloc", "seq": 8}, {"type": "build_failure", "seq": 9, "log": "x", "code": -11},
            {"type": "start", "seq": 0, "pid": 1, "version": 2}]
    out = trace_events(recs, 5)
    assert [n for n, _ in out] == ["cl_call_error", "cl_build_failure", "cl_start"]
    ev = out[0][1]
    assert ev == {"pid": 1, "call_seq": 7, "call_index": 3, "api": "clX", "code": -5, "injected": True,
                  "new_field": [1, 2], "count": 4, "first_seq": 7, "last_seq": 20, "samples": [], "iteration": 5}
    assert out[1][1]["log"] == "x" and out[2][1]["version"] == 2

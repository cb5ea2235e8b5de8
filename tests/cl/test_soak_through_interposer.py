"""`soak run` through the interposer on PoCL: real CL calls from the test engine's
OpenCL path (loaded the way MNN loads OpenCL), GPU bytes beside RSS, injected
errors joined to iterations, and the GPU-only query with and without the override."""

import json
import subprocess
import sys

from soak.run_folder import read_events


def soak(tmp_path, run_id, plan, *args, rc=0):
    plan_file = tmp_path / f"{run_id}.json"
    plan_file.write_text(json.dumps(plan))
    proc = subprocess.run([sys.executable, "-m", "soak", "run", "--fault-plan", str(plan_file), "--backend",
                           "opencl", "--out", str(tmp_path), "--run-id", run_id, "--quiet", *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == rc, proc.stderr
    run = tmp_path / run_id
    return run, list(read_events(run)), json.loads((run / "summary.json").read_text())


def test_gpu_bytes_and_injected_errors_join_the_timeline(tmp_path):
    plan = {"opencl": True, "faults": [{"kind": "gpu_leak", "from": 5, "bytes": 1 << 20}]}
    run, events, summary = soak(tmp_path, "leak", plan, "--iterations", "20", "--cl-gpu-override",
                                "--cl-fault", "clEnqueueWriteBuffer=-5@nth:7")
    assert summary["backend_actual"] == "opencl"
    gpu = [e["gpu_live_bytes"] for e in events if e["event"] == "memory" and e["source"] == "iteration"
           and e["iteration"] is not None]
    assert gpu[-1] - gpu[0] >= 14 * (1 << 20)  # >= 15 leaked 1 MiB buffers, beside the KV buffer
    (err,) = [e for e in events if e["event"] == "cl_call_error"]
    assert (err["api"], err["code"], err["injected"]) == ("clEnqueueWriteBuffer", -5, True)
    it = next(e for e in events if e["event"] == "iteration" and e["i"] == err["iteration"])
    assert it["cl_call_errors"] == 1
    assert "OpenCL enqueue write error:-5" in it["error_lines"]  # what the engine itself printed
    assert any(f["event"] == "fault" and f["iteration"] == err["iteration"] for f in events)


def test_without_the_override_the_run_is_a_cpu_fallback(tmp_path):
    run, events, summary = soak(tmp_path, "fb", {"opencl": True}, "--iterations", "3", "--intercept")
    assert summary["backend_actual"] == "cpu"
    assert any(e["event"] == "fault" and e["kind"] == "cpu_fallback" for e in events)
    assert "Can't Find type=3 backend, use 0 instead" in (run / "engine.log").read_text()
    # the interposer saw the GPU-only query fail
    assert any(e["event"] == "cl_start" for e in events)


def test_allocation_failure_from_the_memory_limit(tmp_path):
    plan = {"opencl": True, "faults": [{"kind": "gpu_leak", "from": 0, "bytes": 4 << 20}]}
    run, events, summary = soak(tmp_path, "oom", plan, "--iterations", "12", "--cl-gpu-override",
                                "--cl-mem-limit", "16M")
    errs = [e for e in events if e["event"] == "cl_call_error"]
    assert errs and all(e["api"] == "clCreateBuffer" and e["code"] == -4 for e in errs)
    assert all(e["why"] == "mem_limit" and e["injected"] for e in errs)
    peak = max(e["gpu_live_bytes"] or 0 for e in events if e["event"] == "memory")
    assert 0 < peak <= 16 << 20


def test_persistent_failure_is_one_event_per_iteration_with_exact_counts(tmp_path):
    from soak.cl.trace import TraceReader

    plan = {"opencl": True, "faults": [{"kind": "gpu_leak", "from": 0, "bytes": 1 << 16}]}
    run, events, summary = soak(tmp_path, "persist", plan, "--iterations", "8", "--cl-gpu-override",
                                "--cl-fault", "clCreateBuffer=-4@from:4")
    errs = [e for e in events if e["event"] == "cl_call_error"]
    assert errs and all((e["api"], e["code"], e["injected"]) == ("clCreateBuffer", -4, True) for e in errs)
    per_iteration = {}
    for e in errs:
        assert e["iteration"] not in per_iteration  # one kind, one event per iteration (None: after the last)
        per_iteration[e["iteration"]] = e["count"]
        assert e["first_seq"] <= e["last_seq"] and 1 <= len(e["samples"]) <= 3
    for it in (e for e in events if e["event"] == "iteration"):
        assert it["cl_call_errors"] == per_iteration.get(it["i"], 0)
    # the test engine reloads OpenCL in the same process: each load's counts are kept
    loads = TraceReader(run).all_stats()
    assert len(loads) > 1 and len({s["pid"] for s in loads}) == 1
    total = sum(s["api"].get("clCreateBuffer", {}).get("errors", 0) for s in loads)
    assert sum(per_iteration.values()) == total > 0  # errors after the last iteration: iteration None


def test_vendor_init_probes_fail_on_every_clean_run(tmp_path):
    # MNN's init asks NVIDIA for three device params it does not support (-30), on every run
    plan = {"opencl": True, "cl_vendor": "nvidia", "faults": []}
    run, events, summary = soak(tmp_path, "nv", plan, "--iterations", "2", "--cl-gpu-override")
    assert summary["backend_actual"] == "opencl"
    errs = [e for e in events if e["event"] == "cl_call_error"]
    assert len(errs) == 3 and all((e["api"], e["code"], e["injected"]) == ("clGetDeviceInfo", -30, False)
                                  for e in errs)
    _, plain_events, _ = soak(tmp_path, "plain", {"opencl": True}, "--iterations", "2", "--cl-gpu-override")
    assert not [e for e in plain_events if e["event"] == "cl_call_error"]


def test_injected_allocation_failure_at_load_continues_on_a_null_buffer(tmp_path):
    # the first clCreateBuffer is the weight upload at load; MNN goes on with the null buffer
    run, events, summary = soak(tmp_path, "nullbuf", {"opencl": True}, "--iterations", "3",
                                "--cl-gpu-override", "--cl-fault", "clCreateBuffer=-4@nth:1", rc=1)
    errs = [e for e in events if e["event"] == "cl_call_error"]
    assert (errs[0]["api"], errs[0]["code"], errs[0]["injected"]) == ("clCreateBuffer", -4, True)
    # each restarted worker fails its upload again (nth counts per process); the rest is the
    # cascade: real driver errors on the null buffer, not injected
    cascade = [e for e in errs if not e["injected"]]
    assert cascade and all((e["api"], e["code"]) == ("clEnqueueWriteBuffer", -38) for e in cascade)
    assert all((e["api"], e["code"]) == ("clCreateBuffer", -4) for e in errs if e["injected"])
    log = (run / "engine.log").read_text()
    assert log.index("Alloc Buffer 262144 error, code:-4") < log.index("CL ERROR CODE")
    its = [e for e in events if e["event"] == "iteration"]
    assert its and all(e["status_name"] != "INTERNAL_ERROR" for e in its)
    assert all("Map error key_ptr == nullptr" in e["error_lines"] for e in its)

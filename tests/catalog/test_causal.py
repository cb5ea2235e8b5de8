"""Causal grouping (issue 11): the first row of `soak classify` is the
earliest root cause, its cascade folded beneath; one row per catalog id and
phase; benign probes per vendor.  Runs are written with soak's EventLog in the
order the runner writes them (interposer records of an iteration, then its
`iteration` event, then its `fault` events); MNN's lines are real ones (MNN's
format strings and the cited reports)."""

from __future__ import annotations

import pytest

from soak.catalog.classify import classify_run
from soak.catalog.loader import load_catalog
from soak.cli import main

from _catalog_runs import cl_fault, crash, ctx, iteration, line_fault, make_run

H200 = ctx(opencl={"platforms": [{"name": "NVIDIA CUDA", "vendor": "NVIDIA Corporation",
                                  "devices": [{"name": "NVIDIA H200", "vendor": "NVIDIA Corporation",
                                               "driver_version": "580.95.05"}]}]})
MALI = ctx(opencl={"device": {"name": "Mali-G720", "vendor": "ARM", "driver_version": "v1.r44p1"}}, os="android")


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def call_error(i, api, code, seq, injected=False, count=1, **extra):
    names = {-4: "CL_MEM_OBJECT_ALLOCATION_FAILURE", -5: "CL_OUT_OF_RESOURCES", -30: "CL_INVALID_VALUE",
             -9999: "CL_NV_INVALID_MEM_ACCESS"}
    return ("cl_call_error", {"api": api, "code": code, "code_name": names[code], "injected": injected,
                              "call_seq": seq, "first_seq": seq, "last_seq": seq + count - 1, "count": count,
                              "iteration": i, **extra})


def probes(i=0):
    # MNN's init asks for CL_DEVICE_HALF_FP_CONFIG; NVIDIA answers -30 (no cl_khr_fp16)
    return [call_error(i, "clGetDeviceInfo", -30, 3, count=3, param=0x1033, param_name="CL_DEVICE_HALF_FP_CONFIG",
                       key="param=CL_DEVICE_HALF_FP_CONFIG")]


def test_injected_alloc_at_load_is_row_one_with_its_cascade(tmp_path, catalog):
    """`--cl-fault clCreateBuffer=-4@nth:5` on NVIDIA: MNN goes on with a null
    buffer; -9999 storms, KV map errors and garbage follow in every iteration."""
    ev = [("load", {"ok": True, "backend_requested": "opencl", "backend_actual": "opencl"})]
    for i in range(4):
        if i == 0:
            ev += probes(0) + [call_error(0, "clCreateBuffer", -4, 41, injected=True, why="nth:5")]
        ev.append(iteration(i, turn=i, cl_errors=[{"code": -9999}], failures=["bad_output", "cl_error", "error_line"],
                            output="。。。。"))
        ev.append(cl_fault(i, "CL ERROR CODE : -9999, info:clEvent ", count=612))
        ev.append(line_fault(i, "Map error key_ptr == nullptr "))
        ev.append(("fault", {"iteration": i, "kind": "bad_output", "phase": "decode", "symptoms": ["garbage"]}))
    result = classify_run(make_run(tmp_path, "nv-alloc", H200, ev), catalog)
    causes = result["causes"]
    assert len(result["findings"]) >= 4  # before grouping: a row per finding, -9999 on top by severity
    assert len(causes) == 1
    root = causes[0]
    assert root["injected"] and root["kind"] == "cl_call_error" and root["rank"] == 1
    assert "clCreateBuffer" in root["signature_text"]
    assert root["severity"] == "critical"  # the cascade's worst (an illegal access) is the row's
    folded = {(c["kind"], c["name"], c["tag"]): c for c in root["cascade"]}
    assert folded[("cl_error", "CL_NV_INVALID_MEM_ACCESS", "clEvent")]["count"] == 4 * 612
    assert folded[("cl_error", "CL_NV_INVALID_MEM_ACCESS", "clEvent")]["fault_id"] == "soak-nvidia-illegal-memory-access"
    assert folded[("error_line", None, "kv_map_error")]["count"] == 4
    assert ("bad_output", None, "garbage") in folded
    # the -30 probes are benign on NVIDIA: no finding, no cause, counted aside
    assert result["summary"]["new"] == 0 and result["summary"]["benign"] == 1
    assert result["benign"][0]["param_name"] == "CL_DEVICE_HALF_FP_CONFIG" and result["benign"][0]["count"] == 3
    roles = {d["signature_text"]: d["role"] for d in result["findings"]}
    assert roles["cl_error/decode: CL_NV_INVALID_MEM_ACCESS info:clEvent"] == "cascade"


def test_persistent_enqueue_failure_is_one_row_with_its_tags(tmp_path, catalog):
    """`clEnqueueNDRangeKernel=-5@from:3000`: every enqueue fails; MNN logs -5
    under many info tags (the tags MNN printed on PoCL, measured)."""
    tags = ["Raster", "Convolution", "BinaryOp", "While", "run3d", "UnaryOp", "LayerNorm", "run2d"]
    ev = [iteration(0)]
    for i in range(1, 4):
        ev.append(call_error(i, "clEnqueueNDRangeKernel", -5, 3000 + 500 * i, injected=True, count=480,
                             kernel="conv_2d_c4h1w4", key="kernel=conv_2d_c4h1w4"))
        ev.append(iteration(i, cl_errors=[{"code": -5}], failures=["cl_error"], decode_tps=1369.0))
        ev += [cl_fault(i, f"CL ERROR CODE : -5, info:{t} ", count=60) for t in tags]
    result = classify_run(make_run(tmp_path, "enq", H200, ev), catalog)
    (row,) = result["causes"]
    assert row["injected"] and row["tags"] == {"conv_2d_c4h1w4": 3 * 480}
    (cl,) = [c for c in row["cascade"] if c["kind"] == "cl_error" and c["tag"] == "Raster"]
    assert cl["fault_id"] == "soak-out-of-resources" and cl["count"] == 3 * 60
    assert sum(c["count"] for c in row["cascade"] if c["kind"] == "cl_error") == 3 * 60 * len(tags)
    assert row["first_iteration"] == 1 and row["last_iteration"] == 3


def test_a_restarted_workers_calls_before_its_first_iteration_belong_to_the_next_one(tmp_path, catalog):
    """A persistent fault first hits iteration 1; the restarted worker's calls while it loads carry
    no iteration: they belong to the iteration after them (file order), not to iteration 0 (soak
    repro would otherwise replay iteration 0 alone, which never fails)."""
    ev = [iteration(0)]
    for i in (1, 2):
        ev.append(call_error(i, "clEnqueueNDRangeKernel", -5, 3000 + 500 * i, injected=True, count=20,
                             kernel="conv_2d_c4h1w4", key="kernel=conv_2d_c4h1w4"))
        ev.append(iteration(i, cl_errors=[{"code": -5}], failures=["cl_error"]))
        ev.append(call_error(None, "clEnqueueNDRangeKernel", -5, 10, injected=True, count=15,
                             kernel="conv_2d_c4h1w4", key="kernel=conv_2d_c4h1w4"))  # the next worker, loading
    ev.append(iteration(3))
    result = classify_run(make_run(tmp_path, "enq-restart", H200, ev), catalog)
    (row,) = result["causes"]
    assert row["injected"] and row["first_iteration"] == 1 and row["last_iteration"] == 3


def test_same_id_same_phase_is_one_row_without_interposer(tmp_path, catalog, capsys):
    """The same -5 storm seen only in MNN's log: one soak-out-of-resources row,
    its info tags inside, each near miss listed once."""
    tags = ["Raster", "Convolution", "BinaryOp", "While", "run3d", "UnaryOp", "LayerNorm", "run2d", "Softmax",
            "MatMul", "Cast"]
    ev = [iteration(0)]
    for i in range(1, 3):
        ev.append(iteration(i, cl_errors=[{"code": -5}], failures=["cl_error"]))
        ev += [cl_fault(i, f"CL ERROR CODE : -5, info:{t} ", count=10) for t in tags]
    run = make_run(tmp_path, "storm", ctx(), ev)
    result = classify_run(run, catalog)
    oor = [d for d in result["findings"] if d["fault_id"] == "soak-out-of-resources"]
    assert len(oor) == len(tags)  # eleven findings, one per info tag ...
    (row,) = result["causes"]     # ... one row
    assert row["fault_id"] == "soak-out-of-resources" and set(row["tags"]) == set(tags)
    assert row["count"] == 2 * 10 * len(tags) and not row["cascade"]
    assert main(["classify", str(run)]) == 0
    out = capsys.readouterr().out
    near = [n["id"] for n in row["near_misses"] if not n["generic"]]
    assert near, "the storm should be a near miss of some report entry"
    for nid in near:
        assert out.count(f"looks like {nid} (") == 1, out
    assert "tags: " in out and "Raster x20" in out


def test_a_clean_iteration_ends_the_cascade(tmp_path, catalog):
    """A transient -5 at iteration 2, clean iterations, then a crash at 6:
    two causes, in the order they happened."""
    ev = [iteration(0), iteration(1)]
    ev += [iteration(2, cl_errors=[{"code": -5}], failures=["cl_error"]), cl_fault(2, "CL ERROR CODE : -5, info:Raster ")]
    ev += [iteration(i) for i in range(3, 6)]
    ev += [crash(6, "SIGSEGV", ["Map error key_ptr == nullptr "])]
    result = classify_run(make_run(tmp_path, "two", ctx(), ev), catalog)
    assert [c["kind"] for c in result["causes"]] == ["cl_error", "crash"]
    assert [c["first_iteration"] for c in result["causes"]] == [2, 6]
    assert all(not c["cascade"] for c in result["causes"])


def test_the_same_failures_without_a_clean_iteration_fold(tmp_path, catalog):
    ev = [iteration(0)]
    ev += [iteration(1, cl_errors=[{"code": -5}], failures=["cl_error"]), cl_fault(1, "CL ERROR CODE : -5, info:Raster ")]
    ev += [crash(2, "SIGSEGV", ["Map error key_ptr == nullptr "])]
    result = classify_run(make_run(tmp_path, "fold", ctx(), ev), catalog)
    (row,) = result["causes"]
    assert row["kind"] == "cl_error" and row["cascade"][0]["kind"] == "crash"
    assert row["severity"] == "critical"


def test_load_failure_before_the_first_iteration_is_the_cause(tmp_path, catalog):
    """A load-phase line (written before iteration 0) precedes what iteration 0 shows."""
    ev = [line_fault(0, "Alloc Buffer 1048576 error, code:-4 ", phase="load"),
          iteration(0, failures=["cl_error"], cl_errors=[{"code": -9999}]),
          cl_fault(0, "CL ERROR CODE : -9999, info:clEvent ", count=50)]
    result = classify_run(make_run(tmp_path, "load", H200, ev), catalog)
    (row,) = result["causes"]
    assert row["kind"] == "error_line" and row["phase"] == "load"
    assert row["cascade"][0]["name"] == "CL_NV_INVALID_MEM_ACCESS"


def test_warnings_start_no_cascade(tmp_path, catalog):
    ev = [line_fault(0, "Cache invalid, will be reset", phase="load"),
          iteration(0, failures=["cl_error"]), cl_fault(0, "CL ERROR CODE : -5, info:Raster ")]
    result = classify_run(make_run(tmp_path, "warn", ctx(), ev), catalog)
    kinds = [(c["kind"], len(c["cascade"])) for c in result["causes"]]
    assert kinds == [("error_line", 0), ("cl_error", 0)]


def test_clean_nvidia_run_has_no_finding(tmp_path, catalog):
    ev = probes(0) + [iteration(i) for i in range(3)]
    result = classify_run(make_run(tmp_path, "clean", H200, ev), catalog)
    assert result["causes"] == [] and result["summary"]["new"] == 0 and result["summary"]["unknown"] == 0
    assert result["summary"]["benign"] == 1


def test_the_same_probe_on_another_vendor_is_a_finding(tmp_path, catalog):
    ev = probes(0) + [iteration(i) for i in range(3)]
    result = classify_run(make_run(tmp_path, "mali", MALI, ev), catalog)
    (row,) = result["causes"]
    assert row["kind"] == "cl_call_error" and "CL_DEVICE_HALF_FP_CONFIG" in row["signature_text"]
    assert result["summary"]["benign"] == 0 and result["summary"]["new"] == 1


def test_probe_of_another_param_on_nvidia_is_a_finding(tmp_path, catalog):
    ev = [call_error(0, "clGetDeviceInfo", -30, 3, param=0x1010, param_name="CL_DEVICE_MAX_MEM_ALLOC_SIZE")]
    ev += [iteration(0)]
    result = classify_run(make_run(tmp_path, "other", H200, ev), catalog)
    assert len(result["causes"]) == 1 and result["summary"]["benign"] == 0

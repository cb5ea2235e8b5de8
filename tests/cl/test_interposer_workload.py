"""The interposer against soak's own OpenCL workload on PoCL (real driver, real errors)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from soak.cl import interposer
from soak.cl.trace import TraceReader, live_objects

# the workload's fixed objects: buffers a, b, c (4096 B each), image 64x32 RGBA8 (8192 B),
# sub-buffer of c (1024 B, shares c's memory)
BASE_BUFFER_BYTES = 3 * 4096
IMAGE_BYTES = 64 * 32 * 4


def leak_bytes(n: int) -> int:
    return sum(4096 + 1000 * i for i in range(n))


def test_runs_transparently(run_workload):
    direct = run_workload("--iterations", "3", intercept=False)
    through = run_workload("--iterations", "3")
    assert direct.rc == 0 and through.rc == 0, through.stderr
    assert direct.lines[1:] == through.lines[1:]  # all but the "library ..." line
    assert through.lines[0][-1] == "interposer=1" and direct.lines[0][-1] == "interposer=0"
    assert through.result("clEnqueueReadBuffer") == [["0", "check=1"]]
    start = through.of("start")[0]
    assert start["real_ok"] is True and start["real_path"].endswith("libOpenCL.so.1")
    assert through.of("error") == []
    api = through.stats["api"]
    assert api["clEnqueueNDRangeKernel"]["calls"] == 3
    assert api["clSetKernelArg"]["calls"] == 3
    assert api["clCreateBuffer"] == {"calls": 3, "errors": 0, "injected": 0}
    # everything the workload made it released again
    objs = through.stats["objects"]
    assert all(o["live"] == 0 for o in objs.values()), objs
    assert objs["buffer"]["created"] == 3 and objs["image"]["created"] == 1
    assert through.result("clCreateKernelsInProgram") == [["0", "1"]]
    assert objs["kernel"]["created"] == 2 and objs["program"]["created"] == 1
    assert objs["context"]["created"] == 1 and objs["queue"]["created"] == 1
    assert objs["subbuffer"]["bytes_created"] == 1024
    assert objs["event"]["created"] == 3 and objs["event"]["released"] == 3
    assert through.stats["live_bytes"] == 0
    assert through.stats["peak_live_bytes"] == BASE_BUFFER_BYTES + IMAGE_BYTES
    assert through.stats["exited"] is True
    assert through.of("exit")[0]["calls"] == through.stats["calls"]


def test_every_real_error_recorded_with_api_and_code(run_workload):
    r = run_workload("--errors")
    assert r.rc == 0, r.stderr
    observed = [(api, int(code)) for api, code in r.result("observed")]
    assert len(observed) == 6
    errs = r.of("error")
    assert [(e["api"], e["code"]) for e in errs] == observed
    names = {e["code"]: e["code_name"] for e in errs}
    assert names == {-61: "CL_INVALID_BUFFER_SIZE", -46: "CL_INVALID_KERNEL_NAME", -49: "CL_INVALID_ARG_INDEX",
                     -30: "CL_INVALID_VALUE", -38: "CL_INVALID_MEM_OBJECT"}
    assert not any(e["injected"] for e in errs)
    seqs = [e["seq"] for e in errs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for e in errs:
        assert e["tid"] > 0 and e["t_ns"] > 0 and e["pid"] == r.of("start")[0]["pid"]
    # the second clCreateKernel passed errcode_ret = NULL: still seen
    assert r.stats["api"]["clCreateKernel"]["errors"] == 2
    assert r.stats["errors"] == 6 and r.stats["injected"] == 0
    assert "size=0" in r.of("error", api="clCreateBuffer")[0]["detail"]


def test_injected_nth_enqueue_ndrange(run_workload):
    r = run_workload("--iterations", "5", options={"faults": "clEnqueueNDRangeKernel=-5@nth:3"})
    codes = [int(c) for _, c in r.result("clEnqueueNDRangeKernel")]
    assert codes == [0, 0, -5, 0, 0]
    (e,) = r.of("error")
    assert e["api"] == "clEnqueueNDRangeKernel" and e["code"] == -5 and e["code_name"] == "CL_OUT_OF_RESOURCES"
    assert e["injected"] is True and e["index"] == 3 and e["why"] == "clEnqueueNDRangeKernel=-5@nth:3"
    assert "kernel=vadd" in e["detail"] and "gws=1024" in e["detail"]
    assert r.stats["api"]["clEnqueueNDRangeKernel"] == {"calls": 5, "errors": 1, "injected": 1}
    # the failed enqueue made no event: 4 created, 4 released
    assert r.stats["objects"]["event"]["created"] == 4


def test_injected_by_name_every_kth_map(run_workload):
    r = run_workload("--maps", "6", options={"faults": "clEnqueueMapBuffer=CL_MAP_FAILURE@every:2"})
    codes = [int(c) for _, c in r.result("clEnqueueMapBuffer")]
    assert codes == [0, -12, 0, -12, 0, -12]
    errs = r.of("error", api="clEnqueueMapBuffer")
    assert [e["index"] for e in errs] == [2, 4, 6]
    assert all(e["injected"] and e["code_name"] == "CL_MAP_FAILURE" for e in errs)


def test_injected_probability_is_seeded_and_reproducible(run_workload):
    opts = {"faults": "clCreateBuffer=CL_MEM_OBJECT_ALLOCATION_FAILURE@p:0.5,seed:11,from:4"}
    runs = [run_workload("--leak", "24", options=opts) for _ in range(2)]
    failed = [[int(i) for i, c in r.result("leak") if c != "0"] for r in runs]
    assert failed[0] == failed[1]
    assert 0 < len(failed[0]) < 24
    for r, f in zip(runs, failed):
        # one kind of error: counted exactly, its first 3 calls written as records
        (agg,) = r.errors(api="clCreateBuffer")
        assert agg["count"] == len(f) and agg["code"] == -4 and agg["injected"]
        assert [s["index"] - 3 for s in agg["samples"]] == f[:3]  # leak buffer i is clCreateBuffer call 3 + i
        errs = r.of("error", api="clCreateBuffer")
        assert [e["index"] - 3 for e in errs] == f[:3]
        assert r.stats["objects"]["buffer"]["live"] == 24 - len(f)
    other = run_workload("--leak", "24", options={"faults": opts["faults"].replace("seed:11", "seed:12")})
    assert [int(i) for i, c in other.result("leak") if c != "0"] != failed[0]


def test_injected_after_time_and_count(run_workload):
    r = run_workload("--sleep-ms", "1200", "--leak", "4",
                     options={"faults": "clCreateBuffer=-4@after:1s;clEnqueueNDRangeKernel=-5@count:2"},
                     env={}, timeout=60)
    assert r.result("clCreateBuffer", "a") == [["0"]]  # before 1 s
    assert [c for _, c in r.result("leak")] == ["-4"] * 4  # after 1.2 s
    r2 = run_workload("--iterations", "4", options={"faults": "clEnqueueNDRangeKernel=-5@count:2"})
    assert [int(c) for _, c in r2.result("clEnqueueNDRangeKernel")] == [-5, -5, 0, 0]


def test_leaked_buffers_counted_to_the_byte(run_workload):
    r = run_workload("--leak", "5", "--svm", "65536")
    assert r.rc == 0
    assert r.result("leaked") == [["5", str(leak_bytes(5))]]
    buf = r.stats["objects"]["buffer"]
    assert buf["live"] == 5 and buf["live_bytes"] == leak_bytes(5)
    assert r.stats["live_bytes"] == leak_bytes(5)
    assert r.stats["objects"]["svm"]["live"] == 0 and r.stats["objects"]["svm"]["bytes_created"] == 65536
    leaks = live_objects(r.records)
    assert sorted(x["bytes"] for x in leaks.values()) == [4096 + 1000 * i for i in range(5)]
    assert all(x["kind"] == "buffer" and x["api"] == "clCreateBuffer" for x in leaks.values())
    exit_rec = r.of("exit")[0]
    assert exit_rec["live"]["buffer"] == [5, leak_bytes(5)] and exit_rec["live_bytes"] == leak_bytes(5)


def test_image_and_subbuffer_details(run_workload):
    r = run_workload()
    (img,) = r.of("alloc", kind="image")
    assert img["dims"] == [64, 32, 1, 1] and img["bytes"] == IMAGE_BYTES
    assert img["channel_order"] == 0x10B5 and img["channel_type"] == 0x10DA  # CL_RGBA, CL_UNSIGNED_INT8
    (sub,) = r.of("alloc", kind="subbuffer")
    parent = [a for a in r.of("alloc", kind="buffer") if a["obj"] == sub["parent"]]
    assert len(parent) == 1 and sub["bytes"] == 1024 and sub["origin"] == 0
    assert sub["live_bytes"] == parent[0]["live_bytes"] + 0  # a sub-buffer adds no bytes of its own
    assert [f["kind"] for f in r.of("free")].count("buffer") == 3


def test_live_bytes_readable_while_worker_runs(cl_build, tmp_path):
    run_dir = tmp_path / "live"
    env = dict(os.environ)
    env.update(interposer.prepare({}, run_dir, interposer_dir=cl_build.lib_dir, mnn_paths=()))
    proc = subprocess.Popen([str(cl_build.workload), "--leak", "4", "--hold-ms", "20000"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        reader = TraceReader(run_dir)
        want = BASE_BUFFER_BYTES + IMAGE_BYTES + leak_bytes(4)
        seen = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = reader.live_bytes()
            if seen == want:
                break
            time.sleep(0.05)
        assert seen == want
        assert len(reader.poll()) >= 4 + 6  # start + allocations so far
        assert proc.poll() is None  # still running
        assert reader.stats()["exited"] is False
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("how,sig", [("segv", signal.SIGSEGV), ("abort", signal.SIGABRT)])
def test_crash_mid_run_leaves_readable_record(run_workload, how, sig):
    r = run_workload("--leak", "3", "--crash", how,
                     options={"faults": "clEnqueueNDRangeKernel=CL_OUT_OF_RESOURCES@nth:1"})
    assert r.rc == -sig
    assert r.result("crashing") == [[how]]
    assert r.of("exit") == []  # the process never got to exit
    (e,) = r.of("error")
    assert e["api"] == "clEnqueueNDRangeKernel" and e["injected"]
    assert r.stats is not None and r.stats["exited"] is False
    assert r.stats["live_bytes"] == BASE_BUFFER_BYTES + IMAGE_BYTES + leak_bytes(3)
    assert r.stats["objects"]["buffer"]["live"] == 6
    assert r.stats["objects"]["context"]["live"] == 1 and r.stats["objects"]["kernel"]["live"] == 1
    assert len(live_objects(r.records)) == 3 + 3 + 1 + 1  # buffers a,b,c + leaks + sub-buffer + image


def test_gpu_override_makes_gpu_query_succeed(run_workload):
    plain = run_workload("--gpu-only")
    assert plain.rc == 3 and plain.result("clGetDeviceIDs") == [["-1", "0"]]
    (e,) = plain.of("error")
    assert e["api"] == "clGetDeviceIDs" and e["code_name"] == "CL_DEVICE_NOT_FOUND" and not e["injected"]
    over = run_workload("--gpu-only", "--iterations", "2", options={"gpu_override": True})
    assert over.rc == 0, over.stderr
    assert over.result("clGetDeviceIDs") == [["0", "1"]]
    assert over.result("device_type") == [["4"]]  # CL_DEVICE_TYPE_GPU
    assert over.result("clEnqueueReadBuffer") == [["0", "check=1"]]
    assert over.stats["gpu_override"] is True and over.of("start")[0]["gpu_override"] is True


def test_build_failure_recorded_with_log(run_workload):
    r = run_workload("--bad-program")
    assert r.result("clBuildProgram", "bad") == [["-11"]]
    (b,) = r.of("build_failure")
    assert b["api"] == "clBuildProgram" and b["code"] == -11 and b["code_name"] == "CL_BUILD_PROGRAM_FAILURE"
    assert b["options"] == "-DSOAK_BAD=1" and b["status"] == -2  # CL_BUILD_ERROR
    assert "undefined_symbol_xyz" in b["log"] and "error" in b["log"]
    assert b["device"]
    (e,) = r.of("error", api="clBuildProgram")
    assert e["code"] == -11 and not e["injected"]


def test_memory_limit_fails_allocations_beyond_budget(run_workload):
    mib = 1 << 20
    r = run_workload("--alloc", "5", "--alloc-size", str(mib), options={"mem_limit": 3 * mib})
    assert r.rc == 0
    # live before: 3 x 4 KiB buffers + 8 KiB image; 3 MiB budget -> 2 more MiB fit
    assert [int(c) for _, c in r.result("alloc")] == [0, 0, -4, -4, -4]
    errs = r.of("error", api="clCreateBuffer")
    assert len(errs) == 3 and all(e["injected"] and e["why"] == "mem_limit" for e in errs)
    assert f"limit={3 * mib}" in errs[0]["detail"]
    assert r.stats["mem_limit"] == 3 * mib and r.stats["peak_live_bytes"] <= 3 * mib
    assert r.stats["api"]["clCreateBuffer"]["injected"] == 3


def test_extension_function_pointers_are_wrapped(run_workload):
    r = run_workload("--ext")
    (line,) = r.result("ext", "clIcdGetPlatformIDsKHR")
    assert line == ["found=1", "same_as_export=1", "rc=0", "n=1"]
    assert r.result("ext", "unknown") == [["found=0"]]
    (x,) = r.of("ext", function="clIcdGetPlatformIDsKHR")
    assert x["wrapped"] is True
    assert r.stats["api"]["clIcdGetPlatformIDsKHR"]["calls"] == 1
    assert r.stats["api"]["clGetExtensionFunctionAddressForPlatform"]["calls"] == 2


def test_missing_real_library_reports_no_platform(run_workload):
    r = run_workload(env={"SOAK_CL_REAL_LIB": "/nonexistent/libOpenCL.so.1"})
    assert r.rc == 2 and r.result("clGetPlatformIDs") == [["-1001", "0"]]
    start = r.of("start")[0]
    assert start["real_ok"] is False and "nonexistent" in start["error"]
    assert "cannot load the real OpenCL library" in r.stderr
    (e,) = r.of("error")
    assert e["api"] == "clGetPlatformIDs" and e["missing"] is True


def test_bad_rule_in_env_is_reported_not_fatal(run_workload):
    r = run_workload("--maps", "1", env={"SOAK_CL_FAULTS": "clNoSuch=-5;clEnqueueMapBuffer=-12@nth:1"})
    (c,) = r.of("config_error")
    assert c["rule"] == "clNoSuch=-5" and "unknown" in c["error"]
    assert r.result("clEnqueueMapBuffer") == [["1", "-12"]]


def test_library_exports_every_header_entry_point(cl_build):
    listing = (cl_build.lib_dir / "generated" / "cl_api.txt").read_text().splitlines()
    generated = {ln.split("\t")[0] for ln in listing}
    # independent check: every prototype in cl.h, found by a plain text scan
    text = open("/usr/include/CL/cl.h").read()
    declared = set(re.findall(r"CL_API_ENTRY\s+(?:CL_API_PREFIX__\w+\s+)?[\w\s\*]+?CL_API_CALL\s+(cl\w+)\s*\(", text))
    assert len(declared) > 100
    assert declared <= generated, declared - generated
    assert {"clCreateCommandQueueWithPropertiesKHR", "clIcdGetPlatformIDsKHR", "clCreateFromGLBuffer",
            "clEnqueueAcquireEGLObjectsKHR"} <= generated
    out = subprocess.run(["nm", "-D", "--defined-only", str(cl_build.lib)], capture_output=True, text=True).stdout
    exported = set(re.findall(r"\sT\s+(cl\w+)$", out, re.M))
    assert exported == generated
    dyn = subprocess.run(["readelf", "-d", str(cl_build.lib)], capture_output=True, text=True).stdout
    assert "Library soname: [libOpenCL.so]" in dyn


def test_same_source_cross_builds_for_aarch64(tmp_path):
    """Plain C, no x86-only code: the interposer and the workload build for aarch64 (no warnings)."""
    import shutil

    cc = shutil.which("aarch64-linux-gnu-gcc")
    assert cc, "install gcc-aarch64-linux-gnu libc6-dev-arm64-cross (CI apt packages)"
    toolchain = tmp_path / "aarch64.cmake"
    toolchain.write_text(f"set(CMAKE_SYSTEM_NAME Linux)\nset(CMAKE_SYSTEM_PROCESSOR aarch64)\n"
                         f"set(CMAKE_C_COMPILER {cc})\n")
    native = os.path.join(os.path.dirname(__file__), "..", "..", "native", "interposer")
    build = tmp_path / "build"
    cfg = subprocess.run(["cmake", "-S", native, "-B", str(build), f"-DCMAKE_TOOLCHAIN_FILE={toolchain}",
                          "-DCMAKE_C_FLAGS=-Werror"], capture_output=True, text=True)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    out = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    head = (build / "libOpenCL.so").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64


def test_counts_exact_under_threads(run_workload):
    threads, calls = 8, 500
    r = run_workload("--threads", str(threads), "--thread-calls", str(calls),
                     options={"faults": "clCreateBuffer=-4@every:7,from:4"})
    assert r.rc == 0, r.stderr
    (line,) = r.result("threads")
    failures = int(line[2].split("=")[1])
    total = threads * calls
    # clCreateBuffer calls 4.. are the threads' ones (a, b, c come first); every 7th fails
    assert failures == len([i for i in range(4, total + 4) if i % 7 == 0])
    api = r.stats["api"]
    assert api["clCreateBuffer"]["calls"] == total + 3
    assert api["clCreateBuffer"]["injected"] == failures
    assert api["clGetPlatformInfo"]["calls"] == total
    assert r.stats["objects"]["buffer"]["created"] == total + 3 - failures
    assert r.stats["objects"]["buffer"]["live"] == 0 and r.stats["live_bytes"] == 0
    (agg,) = r.errors()  # one kind of error: counted exactly in the stats file, 3 records written
    assert agg["count"] == failures and len(r.of("error")) == 3 == len(agg["samples"])
    assert agg["first_seq"] == r.of("error")[0]["seq"] and agg["last_seq"] >= r.of("error")[-1]["seq"]
    # every error its own record when asked: all there, from several threads
    r = run_workload("--threads", str(threads), "--thread-calls", str(calls),
                     options={"faults": "clCreateBuffer=-4@every:7,from:4"}, env={"SOAK_CL_ERROR_SAMPLES": "0"})
    assert len(r.of("error")) == failures == r.errors()[0]["count"]
    assert len({e["tid"] for e in r.of("error")}) > 1
    assert len(r.of("alloc", kind="buffer")) == len(r.of("free", kind="buffer")) == total + 3 - failures


def test_clinfo_output_unchanged_through_interposer(cl_build, tmp_path):
    """clinfo asks ~180 questions; preloaded, the interposer must not change one answer."""
    import glob

    from soak.cl.trace import read_stats

    direct = subprocess.run(["clinfo"], capture_output=True, text=True, timeout=120)
    assert direct.returncode == 0
    env = dict(os.environ, LD_PRELOAD=str(cl_build.lib), SOAK_CL_TRACE=str(tmp_path / "t.jsonl"),
               SOAK_CL_STATS=str(tmp_path / "s.%p"))
    through = subprocess.run(["clinfo"], env=env, capture_output=True, text=True, timeout=120)
    assert through.returncode == 0
    assert through.stdout == direct.stdout
    (stats_file,) = glob.glob(str(tmp_path / "s.*"))
    stats = read_stats(stats_file)
    assert stats["calls"] > 100 and stats["api"]["clGetDeviceInfo"]["calls"] > 50
    over = subprocess.run(["clinfo"], env=dict(env, SOAK_CL_GPU_OVERRIDE="1"), capture_output=True, text=True,
                          timeout=120)
    assert re.search(r"Device Type\s+GPU", over.stdout) and re.search(r"Device Type\s+CPU", direct.stdout)

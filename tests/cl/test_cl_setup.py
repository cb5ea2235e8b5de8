"""soak.cl's Python side: setup, options, fault grammar, trace reader, device info, cl-info."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soak.cl import interposer
from soak.cl.devinfo import describe_opencl
from hypothesis import given, settings
from hypothesis import strategies as st

from soak.cl.fault_rules import CORRUPT_APIS, KERNEL_APIS, SKIP_APIS, join_spec, parse_spec
from soak.cl.options import add_run_arguments, options_from_args, parse_bytes
from soak.cl.trace import TraceReader, read_stats
from soak.errors import BadInput, ExitCode, OpenCLSetupError

REPO = Path(__file__).resolve().parents[2]


# ---- MNN's absolute paths ------------------------------------------------------------

def test_mnn_absolute_path_detected(tmp_path, cl_build):
    paths = [str(tmp_path / "usr/lib/libOpenCL.so"), str(tmp_path / "usr/local/lib/libpocl.so")]
    assert interposer.mnn_bypass_paths(paths) == []
    interposer.check_mnn_paths(paths)  # nothing there: fine
    Path(paths[1]).parent.mkdir(parents=True)
    Path(paths[1]).write_bytes(b"")
    assert interposer.mnn_bypass_paths(paths) == [paths[1]]
    with pytest.raises(OpenCLSetupError) as exc:
        interposer.prepare({}, tmp_path / "run", interposer_dir=cl_build.lib_dir, mnn_paths=paths)
    err = exc.value
    assert err.exit_code == ExitCode.OPENCL_SETUP == 11
    assert paths[1] in err.message and "bypass" in err.message
    assert "--no-intercept" in err.hint and f"mv {paths[1]}" in err.hint


def test_mnn_default_path_list_is_checked(tmp_path, monkeypatch, cl_build):
    fake = tmp_path / "usr/lib64/libOpenCL.so"
    fake.parent.mkdir(parents=True)
    fake.symlink_to("/nonexistent/target")  # a dangling link still wins MNN's dlopen order check
    monkeypatch.setattr(interposer, "MNN_LINUX_OPENCL_PATHS", ("/nonexistent/a.so", str(fake)))
    with pytest.raises(OpenCLSetupError, match="lib64/libOpenCL.so"):
        interposer.prepare({}, tmp_path / "run", interposer_dir=cl_build.lib_dir)
    assert interposer.MNN_LINUX_OPENCL_PATHS[0] == "/nonexistent/a.so"


def test_real_module_lists_mnn_linux_paths():
    assert interposer.MNN_LINUX_OPENCL_PATHS == (
        "/usr/lib/libOpenCL.so", "/usr/local/lib/libOpenCL.so", "/usr/local/lib/libpocl.so",
        "/usr/lib64/libOpenCL.so", "/usr/lib32/libOpenCL.so")


# ---- prepare() -----------------------------------------------------------------------

def test_prepare_env(tmp_path, cl_build):
    env = interposer.prepare({"faults": "clEnqueueNDRangeKernel=CL_OUT_OF_RESOURCES@nth:50", "gpu_override": True,
                              "mem_limit": 1 << 30}, tmp_path / "run", interposer_dir=cl_build.lib_dir,
                             base_env={"LD_LIBRARY_PATH": "/opt/x"}, mnn_paths=())
    assert env["LD_LIBRARY_PATH"] == f"{cl_build.lib_dir}{os.pathsep}/opt/x"
    assert Path(env["SOAK_CL_REAL_LIB"]).is_absolute() and Path(env["SOAK_CL_REAL_LIB"]).exists()
    assert env["SOAK_CL_TRACE"] == str((tmp_path / "run" / "cl_trace.jsonl").resolve())
    assert env["SOAK_CL_STATS"].endswith("cl_trace.%p.stats")
    assert env["SOAK_CL_GPU_OVERRIDE"] == "1" and env["SOAK_CL_MEM_LIMIT"] == str(1 << 30)
    assert env["SOAK_CL_FAULTS"] == "clEnqueueNDRangeKernel=CL_OUT_OF_RESOURCES@nth:50"
    assert env["SOAK_CL_PROFILE"] == "0" and env["SOAK_CL_PROFILE_SAMPLE"] == "16"
    sampled = interposer.prepare({"profile": True, "profile_sample": 4}, tmp_path / "run3",
                                 interposer_dir=cl_build.lib_dir, base_env={}, mnn_paths=())
    assert sampled["SOAK_CL_PROFILE"] == "1" and sampled["SOAK_CL_PROFILE_SAMPLE"] == "4"
    assert sampled["SOAK_CL_PROFILE_BUDGET"] == "5"  # the default budget
    fixed = interposer.prepare({"profile": True, "profile_sample": 4, "profile_budget": 0}, tmp_path / "run4",
                               interposer_dir=cl_build.lib_dir, base_env={}, mnn_paths=())
    assert fixed["SOAK_CL_PROFILE_BUDGET"] == "0"
    assert sampled["SOAK_CL_PROFILE_QUEUE"] == "engine"  # timed in place unless asked for twins
    twin = interposer.prepare({"profile": True, "profile_queue": "twin"}, tmp_path / "run5",
                              interposer_dir=cl_build.lib_dir, base_env={}, mnn_paths=())
    assert twin["SOAK_CL_PROFILE_QUEUE"] == "twin"
    plain = interposer.prepare(None, tmp_path / "r2", interposer_dir=cl_build.lib_dir, base_env={}, mnn_paths=())
    assert plain["LD_LIBRARY_PATH"] == str(cl_build.lib_dir) and plain["SOAK_CL_MEM_LIMIT"] == ""


def test_prepare_rejects_bad_inputs(tmp_path, cl_build):
    kw = dict(interposer_dir=cl_build.lib_dir, mnn_paths=())
    with pytest.raises(BadInput, match="not an entry point"):
        interposer.prepare({"faults": "clEnqueueNDRangeKernelX=-5"}, tmp_path / "a", **kw)
    with pytest.raises(OpenCLSetupError, match="no such file"):
        interposer.prepare({"real_lib": str(tmp_path / "missing.so")}, tmp_path / "b", **kw)
    with pytest.raises(OpenCLSetupError, match="is the interposer itself"):
        interposer.prepare({"real_lib": str(cl_build.lib)}, tmp_path / "c", **kw)
    with pytest.raises(OpenCLSetupError, match="no libOpenCL.so"):
        interposer.prepare({}, tmp_path / "d", interposer_dir=tmp_path, mnn_paths=())


# ---- options -------------------------------------------------------------------------

def _parse(*argv, backend="opencl"):
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    return options_from_args(p.parse_args(list(argv)), backend)


def test_options():
    assert _parse() == {"faults": "", "gpu_override": False, "mem_limit": None, "real_lib": None, "profile": False,
                        "profile_sample": None, "profile_budget": None, "profile_queue": None}
    assert _parse("--cl-profile", backend="cpu")["profile"] is True
    assert _parse("--cl-profile")["profile_sample"] == interposer.DEFAULT_PROFILE_SAMPLE == 16
    assert _parse("--cl-profile", "--cl-profile-sample", "1")["profile_sample"] == 1
    # the cost budget: 5 % by default; --cl-profile-sample alone is a fixed rate; both: the budget from N
    assert _parse("--cl-profile")["profile_budget"] == interposer.DEFAULT_PROFILE_BUDGET == 5
    assert _parse("--cl-profile", "--cl-profile-sample", "8")["profile_budget"] == 0
    assert _parse("--cl-profile", "--cl-profile-sample", "8", "--cl-profile-budget", "2")["profile_budget"] == 2
    with pytest.raises(BadInput, match="needs --cl-profile"):
        _parse("--cl-profile-budget", "4")
    # where timed commands run: in place on the engine's queues by default, or on profiling twins
    assert _parse("--cl-profile")["profile_queue"] == interposer.DEFAULT_PROFILE_QUEUE == "engine"
    assert _parse("--cl-profile", "--cl-profile-queue", "twin")["profile_queue"] == "twin"
    with pytest.raises(BadInput, match="needs --cl-profile"):
        _parse("--cl-profile-queue", "twin")
    for bad in ("-1", "101"):
        with pytest.raises(BadInput, match="not a percentage from 0 to 100"):
            _parse("--cl-profile", "--cl-profile-budget", bad)
    with pytest.raises(BadInput, match="needs --cl-profile"):
        _parse("--cl-profile-sample", "4")
    for bad in ("0", "-3", "2000000"):
        with pytest.raises(BadInput, match="not a whole number from 1 to 1000000"):
            _parse("--cl-profile", "--cl-profile-sample", bad)
    assert _parse(backend="cpu") is None
    assert _parse("--no-intercept") is None
    assert _parse("--intercept", backend="cpu") is not None
    o = _parse("--cl-fault", "clEnqueueNDRangeKernel=-5@nth:50", "--cl-fault",
               "clCreateBuffer=CL_MEM_OBJECT_ALLOCATION_FAILURE@p:0.01,seed:7", "--cl-gpu-override",
               "--cl-mem-limit", "512M", "--cl-real-lib", "/x/libOpenCL.so.1", backend="cpu")
    assert o == {"faults": "clEnqueueNDRangeKernel=-5@nth:50;clCreateBuffer=-4@p:0.01,seed:7",
                 "gpu_override": True, "mem_limit": 512 << 20, "real_lib": "/x/libOpenCL.so.1", "profile": False,
                 "profile_sample": None, "profile_budget": None, "profile_queue": None}
    with pytest.raises(BadInput, match="need the interposer"):
        _parse("--no-intercept", "--cl-gpu-override")
    with pytest.raises(BadInput):
        _parse("--cl-fault", "clFinish=-5@nth:0")
    o = _parse("--cl-fault", "clEnqueueNDRangeKernel=skip@kernel:softmax*,nth:3", "--cl-fault",
               "clEnqueueWriteBuffer=corrupt:bitflip@nth:7")
    assert o["faults"] == "clEnqueueNDRangeKernel=skip@kernel:softmax*,nth:3;clEnqueueWriteBuffer=corrupt:bitflip:1@nth:7"
    with pytest.raises(BadInput, match="skip applies to clEnqueueNDRangeKernel only"):
        _parse("--cl-fault", "clEnqueueWriteBuffer=skip")
    assert parse_bytes("2G") == 2 << 30 and parse_bytes("4096") == 4096 and parse_bytes("1KiB") == 1024
    with pytest.raises(BadInput):
        parse_bytes("1.5G")


@pytest.mark.parametrize("bad", [
    "enqueue=-5", "clFinish=5", "clFinish=CL_NOPE", "clFinish=-5@nth", "clFinish=-5@nth:x", "clFinish=-5@p:2",
    "clFinish=-5@after:soon", "clFinish=-5@when:1", "clSVMFree=-5", "clGetExtensionFunctionAddress=-5",
    "clFinish=CL_SUCCESS",
    # silent faults and the kernel trigger
    "clFinish=skip", "clEnqueueWriteBuffer=skip", "clEnqueueNDRangeKernel=corrupt", "clEnqueueWriteBuffer=corrupt:",
    "clEnqueueWriteBuffer=corrupt:zero", "clEnqueueWriteBuffer=corrupt:nan:0", "clEnqueueWriteBuffer=corrupt:nan:-1",
    "clEnqueueWriteBuffer=corrupt:bitflip:2:3", "clEnqueueWriteBuffer=-5@kernel:vadd", "clEnqueueNDRangeKernel=skip@kernel:",
    "clEnqueueNDRangeKernel=skip@kernel:" + "k" * 96,
])
def test_fault_grammar_rejects(bad):
    with pytest.raises(BadInput) as exc:
        parse_spec(bad)
    assert "clEnqueueNDRangeKernel=-5@nth:50" in exc.value.hint
    assert "skip or corrupt" in exc.value.hint


# ---- property tests of the rule grammar ------------------------------------------------

_APIS = st.sampled_from(sorted({"clFinish", "clCreateBuffer", "clSetKernelArg"} | SKIP_APIS | CORRUPT_APIS))
_GLOB = st.text(alphabet="abcxyz_019*?[]-", min_size=1, max_size=20)


@st.composite
def _rule(draw):
    api = draw(_APIS)
    kinds = ["error"] + (["skip"] if api in SKIP_APIS else []) + (["corrupt"] if api in CORRUPT_APIS else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "error":
        action = draw(st.sampled_from(["", "=-5", "=CL_INVALID_VALUE", "=-9999"]))
    elif kind == "skip":
        action = "=skip"
    else:
        mode = draw(st.sampled_from(["", ":nan", ":bitflip"]))
        words = draw(st.sampled_from(["", ":all", f":{draw(st.integers(1, 1 << 40))}"])) if mode else ""
        action = "=corrupt" + mode + words
    trig = {}
    for key in draw(st.lists(st.sampled_from(["nth", "every", "from", "count", "seed", "p", "after", "kernel"]),
                             unique=True, max_size=4)):
        if key == "kernel" and api not in KERNEL_APIS:
            continue
        if key == "after":
            trig[key] = draw(st.sampled_from(["30", "1.5s", "200ms", "0.000001", "7"]))
        else:
            trig[key] = (draw(_GLOB) if key == "kernel" else repr(draw(st.floats(0, 1))) if key == "p"
                         else draw(st.integers(0 if key == "seed" else 1, 1 << 62)))
    text = api + action + ("@" + ",".join(f"{k}:{v}" for k, v in trig.items()) if trig else "")
    return text, api, kind


@settings(max_examples=300, deadline=None)
@given(st.lists(_rule(), min_size=1, max_size=5))
def test_fault_grammar_round_trips(rules):
    """Every well-formed rule parses to its action, and join_spec's text (what the interposer
    reads) parses back to the same rules."""
    parsed = parse_spec(";".join(text for text, _, _ in rules))
    assert [(r.api, r.action) for r in parsed] == [(api, kind) for _, api, kind in rules]
    again = parse_spec(join_spec(parsed))
    assert [(r.api, r.action, r.code, r.mode, r.words, r.triggers) for r in again] == \
        [(r.api, r.action, r.code, r.mode, r.words, r.triggers) for r in parsed]
    for r in parsed:
        assert (r.code == 0) == (r.action != "error")
        assert r.action != "corrupt" or (r.mode in ("nan", "bitflip") and r.words >= 0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="clEnqueuNDRagKrWitBf=@,:;-_skpcorumbflna0159*", max_size=60))
def test_fault_grammar_never_crashes(text):
    """Any text is rules or one BadInput, never another exception."""
    try:
        parse_spec(text)
    except BadInput as exc:
        assert "bad OpenCL fault rule" in str(exc)


def test_fault_grammar_accepts():
    rules = parse_spec("clFinish ; clCreateBuffer=CL_INVALID_BUFFER_SIZE@from:3,count:2;"
                       "clEnqueueMapBuffer=-12@every:10,after:200ms,p:0.5,seed:0")
    assert [(r.api, r.code) for r in rules] == [("clFinish", -5), ("clCreateBuffer", -61), ("clEnqueueMapBuffer", -12)]
    assert rules[2].triggers == {"every": 10, "after": 0.2, "p": 0.5, "seed": 0}


# ---- trace reader --------------------------------------------------------------------

def test_trace_reader_tolerates_partial_and_corrupt_lines(tmp_path):
    path = tmp_path / "cl_trace.jsonl"
    path.write_bytes(b'{"type":"start","pid":1}\n{"type":"error","api":"clFinish","code":-36}\n{"type":"err')
    r = TraceReader(tmp_path)
    assert [x["type"] for x in r.poll()] == ["start", "error"]
    assert r.poll() == []
    with path.open("ab") as f:
        f.write(b'or","api":"clFlush","code":-5}\nnot json\n{"type":"exit","note":"\xff"}\n')
    got = r.poll()
    assert [x.get("api") for x in got] == ["clFlush", None]
    assert got[1]["note"] == "\ufffd" and r.corrupt == 1
    assert TraceReader(tmp_path / "missing").poll() == []
    assert TraceReader(tmp_path).stats() is None and TraceReader(tmp_path).live_bytes() is None


def test_stats_reader_rejects_other_files(tmp_path):
    p = tmp_path / "cl_trace.1.stats"
    p.write_bytes(b"\0" * 300)
    assert read_stats(p) is None  # created, not yet initialised
    p.write_bytes(b"NOTSTATS" + b"\1" * 300)
    with pytest.raises(BadInput, match="not a soak interposer stats file"):
        read_stats(p)


# ---- device info ---------------------------------------------------------------------

def test_describe_opencl_reports_pocl_device():
    info = describe_opencl()
    assert info["interposer"] is False
    (plat,) = [p for p in info["platforms"] if "pocl" in (p["vendor"] or "").lower()]
    dev = plat["devices"][0]
    assert dev["type"] == ["CPU"] and dev["global_mem_size"] > 0 and dev["max_mem_alloc_size"] > 0
    assert dev["name"] and dev["driver_version"] and isinstance(dev["extensions"], list)
    assert isinstance(dev["fp16"], bool) and dev["image_support"] is True and dev["image2d_max_width"] >= 2048
    assert plat["gpu_query"] == {"rc": -1, "devices": 0}


def test_describe_opencl_errors(tmp_path):
    with pytest.raises(OpenCLSetupError) as exc:
        describe_opencl(str(tmp_path / "nope.so"))
    assert exc.value.exit_code == 11 and "pocl-opencl-icd" in exc.value.hint
    with pytest.raises(OpenCLSetupError, match="not an OpenCL library"):
        describe_opencl("libc.so.6")
    # a loader with no driver: OCL_ICD_VENDORS points at an empty folder
    env = dict(os.environ, OCL_ICD_VENDORS=str(tmp_path), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "soak.cl.devinfo"], env=env, capture_output=True, text=True)
    assert proc.returncode == 11
    out = json.loads(proc.stdout)
    assert "no OpenCL platform" in out["error"] and "/etc/OpenCL/vendors" in out["hint"]


def test_cl_info_command_shows_override(cl_build):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "soak", "cl-info", "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["interposer"] == str(cl_build.lib)
    plain, over = res["views"]["interposer"], res["views"]["interposer+gpu_override"]
    assert plain["interposer"] is True and plain["library"] == "libOpenCL.so"
    assert plain["platforms"][0]["gpu_query"]["devices"] == 0
    assert over["platforms"][0]["gpu_query"]["devices"] >= 1
    assert over["platforms"][0]["devices"][0]["type"] == ["GPU"]
    text = subprocess.run([sys.executable, "-m", "soak", "cl-info"], env=env, capture_output=True, text=True,
                          timeout=300).stdout
    assert "GPU query (what MNN asks): 0 device(s)" in text and "with --cl-gpu-override: 1 device(s)" in text
    bad = subprocess.run([sys.executable, "-m", "soak", "cl-info", "--cl-real-lib", "/nonexistent.so"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 11 and "Traceback" not in bad.stderr and "hint:" in bad.stderr

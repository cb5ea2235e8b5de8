"""Signatures: stable under renumbered addresses, pointers, paths, line
numbers, timestamps and pids; distinct across different faults."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from soak.catalog._clcodes import CL_ERROR_NAMES
from soak.catalog.classify import classify_run
from soak.catalog.loader import load_catalog
from soak.catalog.signature import normalize_line, signature

from _catalog_runs import crash, ctx, iteration, make_run

# Real MNN / driver line formats (research §1.3, §3) with the parts that
# change between runs and machines as placeholders.
TEMPLATES = [
    "Alloc Buffer {n} error, code:-4 ",
    "Alloc Image {n} x {n} error, code:-40 ",
    "programName.c_str()=s buffer_to_image in buildKernelWithCache, {n} ",
    "OpenCL alloc buffer failed (STATIC), size={n}",
    "[Error]: onForward returned no outputs. seqLen={n}, inDecode={n}, inputs={n}, moduleKey=({n},{n})",
    "Fatal signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr {addr} in tid {n} (llm_demo), pid {n} (llm_demo)",
    "      #00 pc {pc}  {path}/libMNN_CL.so (MNN::OpenCLBackend::onCreate+{n}) (BuildId: {build})",
    "load {path}/llm.mnn ... Map error ptrCL == nullptr",
    "Can't open file:{path}/mnn_cachefile.bin",
    "<clGetPlatformIDs:{n}>: Fatal: Failed to open libCB from libOpenCL",
    "Invalid file size {n}, now need file size {n}",
    "[MNN:LLM] Warning: sequence length {n} exceeds max_position_embeddings ({n}), output quality may degrade.",
    "Segmentation fault (core dumped) at {addr}",
]
PREFIXES = ["", "{date} {time}  {n}  {n} I MNNJNI: ", "I/MNNJNI({n}): ", "E/Adreno-CB: ", "[{dmesg}] "]

nums = st.integers(min_value=0, max_value=2**40)
addrs = st.integers(min_value=0, max_value=2**64 - 1).map(lambda v: f"0x{v:x}")
pcs = st.integers(min_value=0, max_value=2**48).map(lambda v: f"{v:016x}")
builds = st.binary(min_size=16, max_size=20).map(bytes.hex)
seg = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", ".."))
paths = st.lists(seg, min_size=1, max_size=5).map(lambda p: "/" + "/".join(p))
dates = st.tuples(st.integers(1, 12), st.integers(1, 28)).map(lambda t: f"{t[0]:02d}-{t[1]:02d}")
times = st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999)).map(
    lambda t: f"{t[0]:02d}:{t[1]:02d}:{t[2]:02d}.{t[3]:03d}")
dmesgs = st.tuples(st.integers(0, 99999), st.integers(0, 999999)).map(lambda t: f"{t[0]:5d}.{t[1]:06d}")


@st.composite
def filled(draw, template: str):
    out = template
    for key, strat in (("{n}", nums.map(str)), ("{addr}", addrs), ("{pc}", pcs), ("{build}", builds),
                       ("{path}", paths), ("{date}", dates), ("{time}", times), ("{dmesg}", dmesgs)):
        while key in out:
            out = out.replace(key, draw(strat), 1)
    return out


@settings(max_examples=300)
@given(st.data(), st.sampled_from(TEMPLATES), st.sampled_from(PREFIXES))
def test_line_normalization_is_stable(data, template, prefix):
    a = data.draw(filled(prefix + template))
    b = data.draw(filled(prefix + template))
    assert normalize_line(a) == normalize_line(b), (a, b)
    assert normalize_line(a) == normalize_line(data.draw(filled(template)))  # logcat/dmesg prefix or not


@given(st.data(), st.sampled_from(TEMPLATES), st.sampled_from(TEMPLATES))
def test_different_messages_stay_different(data, t1, t2):
    if t1 == t2:
        return
    assert normalize_line(data.draw(filled(t1))) != normalize_line(data.draw(filled(t2)))


codes = st.sampled_from(sorted(c for c in CL_ERROR_NAMES if c != 0))
tags = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=24)


@given(codes, codes, tags)
def test_cl_signature_distinct_by_code(c1, c2, tag):
    s1 = signature("cl_error", "decode", {"code": c1, "info": tag})
    s2 = signature("cl_error", "decode", {"code": c2, "info": tag})
    assert (s1 == s2) == (c1 == c2)


@given(codes, tags, tags)
def test_cl_signature_distinct_by_tag_and_phase(code, t1, t2):
    s1 = signature("cl_error", "decode", {"code": code, "info": t1})
    assert (s1 == signature("cl_error", "decode", {"code": code, "info": t2})) == (t1.strip() == t2.strip())
    assert s1 != signature("cl_error", "prefill", {"code": code, "info": t1})


@given(st.data(), st.sampled_from(["SIGSEGV", "SIGABRT", "SIGBUS", "SIGKILL"]),
       st.sampled_from(["SIGSEGV", "SIGABRT", "SIGBUS", "SIGKILL"]))
def test_crash_signature_stable_across_machines_distinct_by_signal(data, sig1, sig2):
    def last_lines():
        return [data.draw(filled("load {path}/llm.mnn")),
                "Build program failed, err:-11 ! ",
                data.draw(filled("programName.c_str()=s buffer_convert_buf in buildKernelWithCache, {n} ")),
                data.draw(filled("Segmentation fault (core dumped) at {addr}"))]
    a = signature("crash", "load", {"signal": sig1, "last_lines": last_lines()})
    b = signature("crash", "load", {"signal": sig1, "last_lines": last_lines()})
    c = signature("crash", "load", {"signal": sig2, "last_lines": last_lines()})
    assert a == b
    assert (a == c) == (sig1 == sig2)
    assert "CL_BUILD_PROGRAM_FAILURE" in a[1] and "buildKernelWithCache" in a[1]


def test_first_cl_code_and_tag_go_into_a_crash_signature():
    base = {"signal": "SIGSEGV", "last_lines": ["CL ERROR CODE : -36, info:Raster ", "boom"]}
    other = {"signal": "SIGSEGV", "last_lines": ["CL ERROR CODE : -5, info:Raster ", "boom"]}
    assert signature("crash", "decode", base) != signature("crash", "decode", other)
    assert "CL_INVALID_COMMAND_QUEUE info:Raster" in signature("crash", "decode", base)[1]


def test_signature_is_the_same_in_two_runs_on_two_machines(tmp_path):
    """Same crash, different run folders, paths, addresses, pids: one signature."""
    catalog = load_catalog()
    sigs = []
    for n, (home, addr) in enumerate((("/home/alice/mnn", "0x7f3a2b1c00"), ("/data/local/tmp/x9", "0x55d0c0ffee"))):
        lines = [f"load {home}/qwen/llm.mnn", "Map error key_ptr == nullptr ",
                 f"Fatal signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr {addr} in tid {4000 + n}"]
        run = make_run(tmp_path, f"run{n}", ctx(), [iteration(0), crash(1, "SIGSEGV", lines)])
        res = classify_run(run, catalog)
        sigs.append([d["signature"] for d in res["findings"] if d["kind"] == "crash"][0])
    assert sigs[0] == sigs[1] and sigs[0].startswith("sig-") and len(sigs[0]) == 16


def test_every_finding_signature_is_the_per_event_signature(tmp_path):
    """soak.outputs joins findings to events with signature(kind, phase, event):
    every finding that comes from events must carry that same id."""
    from soak.run_folder import read_events

    from _catalog_runs import cl_fault, line_fault

    ev = [cl_fault(0, "CL ERROR CODE : -36, info:conv_2d_c4h1w1256_1_1_1_1_1_1 "),
          line_fault(1, "Alloc Buffer 4096 error, code:-4 "),
          ("cl_call_error", {"api": "clEnqueueNDRangeKernel", "code": -5, "code_name": "CL_OUT_OF_RESOURCES",
                             "injected": True, "call_seq": 17, "iteration": 1}),
          ("cl_call_error", {"api": "clEnqueueNDRangeKernel", "code": -5, "code_name": "CL_OUT_OF_RESOURCES",
                             "injected": False, "call_seq": 18, "iteration": 1}),
          crash(2, 11, ["Map error key_ptr == nullptr ", "at 0xdeadbeef1"]),
          ("fault", {"iteration": 3, "kind": "bad_output", "phase": "decode", "symptoms": ["repetition", "empty"]}),
          ("fault", {"iteration": 3, "kind": "hang", "phase": "reset", "timeout_s": 5, "last_lines": []})]
    run = make_run(tmp_path, "j", ctx(), ev)
    result = classify_run(run, load_catalog())
    from_events = set()
    for e in read_events(run):
        if e["event"] in ("fault", "cl_call_error"):
            kind = e.get("kind", "cl_call_error") if e["event"] == "fault" else "cl_call_error"
            from_events.add(signature(kind, e.get("phase"), e)[0])
    assert {f["signature"] for f in result["findings"]} == from_events
    assert len(from_events) == 7

"""Crash titles from native frames (issue 24): both workers record the crashing
thread's backtrace (native/crash), the supervisor symbolizes it (soak.backtrace,
soak.elf_symbols), and a crash's signature is its first frame outside libc, the
loader and soak: `crash/decode: SIGSEGV in soak_test_softmax_inside`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from coresupport import faults, soak_cli
from soak import backtrace, elf_symbols, logparse
from soak.catalog.signature import signature
from soak.native_build import ensure_built
from soak.worker import protocol

REPO = Path(__file__).resolve().parents[2]


def _events(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines() if x.strip()]


def _run(tmp_path: Path, plan: list[dict], iterations: int, run_id: str = "r") -> Path:
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    res = soak_cli("run", "--engine", "test", "--fault-plan", str(tmp_path / "plan.json"), "--iterations",
                   str(iterations), "--max-new-tokens", "8", "--quiet", "--out", str(tmp_path / "logs"),
                   "--run-id", run_id, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    return tmp_path / "logs" / run_id


# ---- parsing and titles ----

SOAK_LINES = """\
*** soak: fatal signal 11 (SIGSEGV), code 1, fault addr 0x0, pid 77, tid 90 ***
soak backtrace (file offsets):
    #00 fo 0000000000001a2b  /usr/lib/x86_64-linux-gnu/libc.so.6
    #01 fo 0000000000000040  /nonexistent/libsoak_crash.so
    #02 fo 0000000000002000  /nonexistent/libengine.so
    #03 fo 0000000000003000  /nonexistent/python3.11
*** soak: end of backtrace ***""".splitlines()

TOMBSTONE_LOGCAT = [
    "12-07 13:00:00.100  4242  4242 F libc    : Fatal signal 6 (SIGABRT), code -6 in tid 4250 (soak-runner)",
    "12-07 13:00:00.200  5000  5000 F DEBUG   : pid: 4242, tid: 4250, name: soak-runner  >>> soak-runner <<<",
    "12-07 13:00:00.200  5000  5000 F DEBUG   : backtrace:",
    "12-07 13:00:00.200  5000  5000 F DEBUG   :       #00 pc 000000000004e8d0  /apex/com.android.runtime/lib64/"
    "bionic/libc.so (abort+168) (BuildId: 0123abcd)",
    "12-07 13:00:00.200  5000  5000 F DEBUG   :       #01 pc 00000000001a2b3c  /data/local/tmp/soak/lib/libMNN_CL.so "
    "(_ZN3MNN6OpenCL21AttentionBufExecution8onResizeERKSt6vectorIPNS_6TensorESaIS4_EES8_+572)",
    "12-07 13:00:00.200  5000  5000 F DEBUG   :       #02 pc 0000000000123456  /data/local/tmp/soak/lib/libMNN.so "
    "(MNN::Pipeline::allocMemory(bool, bool)+96) (BuildId: 4567)",
]

GDB_BT = [
    "Thread 7 \"llm_demo\" received signal SIGSEGV, Segmentation fault.",
    "#0  0x00007fffd4c0e1a3 in _pocl_kernel_softmax_inside_workgroup () from "
    "/root/.cache/pocl/kcache/KC/OKAD/softmax_inside/64-1-1-goffs0-smallgrid/softmax_inside.so",
    "#1  0x00007ffff7a9c1b2 in ?? () from /usr/lib/x86_64-linux-gnu/pocl/libpocl-devices-pthread.so",
    "#2  0x00007ffff7c94ac3 in start_thread (arg=<optimized out>) at ./nptl/pthread_create.c:442",
]


def test_a_tombstone_in_logcat_is_titled_by_its_first_frame_outside_libc():
    assert backtrace.title_frame(TOMBSTONE_LOGCAT) == "MNN::OpenCL::AttentionBufExecution::onResize"
    assert backtrace.title_frames(TOMBSTONE_LOGCAT, 2) == ["MNN::OpenCL::AttentionBufExecution::onResize",
                                                           "MNN::Pipeline::allocMemory"]
    frame = backtrace.parse_line(TOMBSTONE_LOGCAT[3])
    assert (frame.index, frame.form, frame.addr, frame.base, frame.symbol, frame.sym_off) == (
        0, "pc", 0x4e8d0, "libc.so", "abort", 168)


def test_a_pocl_kernel_frame_from_gdb_names_the_kernel():
    assert backtrace.title_frame(GDB_BT) == "softmax_inside (OpenCL kernel)"


def test_soak_handler_lines_skip_libc_and_soak_and_keep_an_unsymbolized_module_with_its_offset():
    # the modules are not on this machine: the frame keeps module and file offset
    assert backtrace.title_frame(SOAK_LINES) == "libengine.so+0x2000"
    assert all(backtrace.is_backtrace_line(x) for x in SOAK_LINES)
    assert not backtrace.is_backtrace_line("CL ERROR CODE : -5, info:Raster")
    # JIT code in anonymous memory: not the title while a named frame follows, never its address
    jit = ["    #00 fo 00007f0012345678  [unknown]", "    #01 fo 0000000000002000  /nonexistent/libengine.so"]
    assert backtrace.title_frame(jit) == "libengine.so+0x2000"
    assert backtrace.title_frame(jit[:1]) == "[unknown]"


def test_names_lose_parameters_and_gcc_clone_suffixes():
    f = backtrace.Frame(0, "pc", 0x10, "/x/libMNN.so", "_ZN3MNN6Tensor4sizeEv.cold", 3)
    assert backtrace.frame_name(f) == "MNN::Tensor::size"
    g = backtrace.Frame(0, "pc", 0x10, "/x/libMNN.so", "std::vector<int, std::allocator<int> >::at(unsigned long) const", 3)
    assert backtrace.frame_name(g) == "std::vector<int, std::allocator<int> >::at"
    assert elf_symbols.demangle("_ZN8soaktest21AttentionBufExecution8onResizeEPKc") == \
        "soaktest::AttentionBufExecution::onResize(char const*)"
    assert elf_symbols.demangle("plain_c_name") == "plain_c_name"


def test_two_crashes_at_two_frames_are_two_signatures_and_one_frame_one():
    def crash(lines):
        return {"signal": "SIGSEGV", "exit_code": -11, "last_lines": ["a line"], "backtrace": lines}

    a = signature("crash", "decode", crash(TOMBSTONE_LOGCAT))
    b = signature("crash", "decode", crash(GDB_BT))
    assert a[1] == "crash/decode: SIGSEGV in MNN::OpenCL::AttentionBufExecution::onResize"
    assert b[1] == "crash/decode: SIGSEGV in softmax_inside (OpenCL kernel)"
    assert a[0] != b[0]
    # the same frame at another address (another build) is the same crash
    moved = [x.replace("00000000001a2b3c", "00000000001a0000") for x in TOMBSTONE_LOGCAT]
    assert signature("crash", "decode", crash(moved)) == a
    # without frames: as before
    assert signature("crash", "decode", {"signal": "SIGSEGV", "last_lines": []})[1] == "crash/decode: SIGSEGV"


def test_symbolized_from_the_elf_file_of_the_module():
    lib = ensure_built("soak_test_engine")
    elf = elf_symbols.load(str(lib))
    name = "soak_test_softmax_inside"
    start, size, _ = next(s for s in elf.syms if s[2] == name)
    off, vaddr, _ = next(seg for seg in elf.loads if seg[1] <= start < seg[1] + seg[2])
    file_offset = start - vaddr + off + 5
    lines = [f"    #00 fo {file_offset:016x}  {lib}", f"    #01 fo {file_offset:016x}  {lib}"]
    out = backtrace.crash_backtrace(lines)
    assert out[0] == f"#00 pc {start + 5:016x}  {lib} ({name}+5)"
    assert backtrace.title_frame(lines) == name


# ---- the workers ----

CRASH_PROGRAM = """
import ctypes, os, sys
lib = ctypes.CDLL(sys.argv[1])
assert lib.soak_crash_install(2) == 0
if sys.argv[2] == "segv":
    ctypes.string_at(0)
os.abort()
"""


@pytest.mark.parametrize("how, sig", [("segv", signal.SIGSEGV), ("abort", signal.SIGABRT)])
def test_handler_chains_to_faulthandler_and_keeps_the_signal(tmp_path, how, sig):
    """Python's faulthandler (enabled first, as PYTHONFAULTHANDLER does) still runs after
    soak's handler, and the process still dies of its own signal."""
    lib = ensure_built("soak_crash")
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, "-c", CRASH_PROGRAM, str(lib), how], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == -sig, proc.stderr
    err = proc.stderr
    assert f"*** soak: fatal signal {int(sig)} ({sig.name})" in err and "*** soak: end of backtrace ***" in err
    assert "Fatal Python error" in err, err
    assert err.index("soak: end of backtrace") < err.index("Fatal Python error")
    frames = [backtrace.parse_line(x) for x in err.splitlines() if backtrace.parse_line(x)]
    assert frames[0].index == 0 and "libc" in frames[0].base
    assert any("python" in f.base for f in frames)


def _drive_runner(argv, plan: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "engine.json"
    config.write_text(json.dumps(plan))
    spec = {"kind": "native", "engine_lib": str(ensure_built("soak_test_engine")), "plugins": [],
            "config_path": str(config)}
    c = protocol.encode_command
    lines = [c("open", 1, spec), c("load", 2), c("respond", 3, 8, b"hello", json.dumps({"soak_iteration": 0}))]
    return subprocess.run(argv, input=b"".join(lines), capture_output=True, timeout=60)


@pytest.mark.parametrize("worker", ["runner", "python"])
def test_both_workers_write_the_crashing_frame_and_die_of_the_signal(tmp_path, worker):
    if worker == "runner":
        argv = [str(ensure_built("soak-runner"))]
    else:
        argv = [sys.executable, "-m", "soak.worker"]
    plan = {"zero_work": True, "faults": [{"kind": "crash", "at": 0, "signal": "bus", "in": "soak_test_decode_step"}]}
    proc = _drive_runner(argv, plan, tmp_path)
    assert proc.returncode == -signal.SIGBUS, proc.stderr.decode()
    log = proc.stderr.decode(errors="replace").splitlines()
    assert any("*** soak: fatal signal 7 (SIGBUS)" in x for x in log)
    assert backtrace.title_frame(log) == "soak_test_decode_step"
    bt = backtrace.crash_backtrace(log)
    assert any("(soak_test_decode_step+" in x for x in bt)


def _worker_argv(worker: str) -> list[str]:
    return [str(ensure_built("soak-runner"))] if worker == "runner" else [sys.executable, "-m", "soak.worker"]


@pytest.mark.parametrize("worker", ["runner", "python"])
@pytest.mark.parametrize("threads, chains", [(4, True), (1, False)])
def test_a_library_handler_put_over_soaks_does_not_lose_the_dump(tmp_path, worker, threads, chains):
    """libLLVM (PoCL's kernel compiler) installs its own fatal-signal handler over soak's when
    OpenCL starts, with SA_RESETHAND: while it runs the action is the default one, so when several
    PoCL threads fault at once the second ended the process before any handler wrote a line (and a
    handler that does not hand back ends it at once).  After the load the worker puts soak's back
    on top: the crashing frame is written, then the signal goes on to that handler, and the
    process still dies of it."""
    plan = {"zero_work": True, "faults": [
        {"kind": "signal_handler", "chains": chains},
        {"kind": "crash", "at": 0, "in": "soak_test_softmax_inside", "threads": threads}]}
    proc = _drive_runner(_worker_argv(worker), plan, tmp_path)
    log = proc.stderr.decode(errors="replace").splitlines()
    assert proc.returncode == -signal.SIGSEGV, log
    notes = [x for x in log if x.startswith("soak: the fatal-signal handler had been replaced")]
    assert len(notes) == 1 and "SEGV" in notes[0] and "libsoak_test_engine" in notes[0], log
    assert logparse.parse_line(notes[0]) is None  # a note, not an error line
    assert sum("*** soak: fatal signal 11 (SIGSEGV)" in x for x in log) == 1, log
    assert backtrace.title_frame(log) == "soak_test_softmax_inside"


def test_a_crash_with_threads_out_of_range_is_refused(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps([{"kind": "crash", "at": 1, "threads": 0}]))
    res = soak_cli("run", "--engine", "test", "--fault-plan", str(tmp_path / "plan.json"), "--iterations", "2",
                   "--quiet", "--out", str(tmp_path / "logs"), cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "threads" in res.stderr and "Traceback" not in res.stderr


def test_a_plan_naming_no_crash_site_is_refused(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps([{"kind": "crash", "at": 1, "in": "no_such_function"}]))
    res = soak_cli("run", "--engine", "test", "--fault-plan", str(tmp_path / "plan.json"), "--iterations", "2",
                   "--quiet", "--out", str(tmp_path / "logs"), cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert "no_such_function" in res.stderr and "soak_test_decode_step" in res.stderr
    assert "Traceback" not in res.stderr


# ---- end to end: soak run, soak classify ----

def test_test_engine_crashes_at_chosen_frames_give_one_row_each(tmp_path):
    plan = [
        {"kind": "crash", "at": [2, 9], "in": "soak_test_softmax_inside"},
        {"kind": "crash", "at": [5], "signal": "abort", "in": "soaktest::AttentionBufExecution::onResize"},
    ]
    run = _run(tmp_path, plan, 12)
    evs = _events(run)
    crashes = faults(evs, "crash")
    assert [(c["iteration"], c["signal"]) for c in crashes] == [(2, "SIGSEGV"), (5, "SIGABRT"), (9, "SIGSEGV")]
    # the exit status is the signal's, as without the handler
    exits = [e for e in evs if e["event"] == "worker_exit" and e.get("reason") == "crash"]
    assert [e["signal"] for e in exits] == ["SIGSEGV", "SIGABRT", "SIGSEGV"]
    first = crashes[0]
    assert first["backtrace"][0].startswith("#00 pc ") and "(soak_test_softmax_inside+" in first["backtrace"][0]
    assert not any(backtrace.is_backtrace_line(x) for x in first["last_lines"])
    res = soak_cli("classify", "--json", str(run), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    causes = json.loads(res.stdout)["causes"]
    texts = sorted(c["signature_text"] for c in causes)
    assert texts == ["crash/decode: SIGABRT in soaktest::AttentionBufExecution::onResize",
                     "crash/decode: SIGSEGV in soak_test_softmax_inside"]
    segv = next(c for c in causes if "softmax" in c["signature_text"])
    assert segv["count"] == 2
    assert segv["title"] == segv["signature_text"]  # not the generic "Engine process crashed"


def test_catalog_entries_match_on_frames(tmp_path):
    run = _run(tmp_path, [{"kind": "crash", "at": [1], "in": "soak_test_softmax_inside"},
                          {"kind": "crash", "at": [3], "in": "soak_test_decode_step"}], 5)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "frames.yaml").write_text(
        "- id: softmax-frame\n  title: crash in softmax\n  description: d\n  severity: critical\n"
        "  match:\n    kind: crash\n    frame: '^soak_test_softmax_inside$'\n"
        "  remedy:\n    cause: c\n    workaround: w\n")
    res = soak_cli("classify", "--json", "--catalog", str(catalog), str(run), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    causes = json.loads(res.stdout)["causes"]
    known = {c["fault_id"]: c["signature_text"] for c in causes}
    assert known.get("softmax-frame") == "crash/decode: SIGSEGV in soak_test_softmax_inside"
    assert "crash/decode: SIGSEGV in soak_test_decode_step" in known.values()
    why = next(c for c in causes if c["fault_id"] == "softmax-frame")
    assert "crash frame 'soak_test_softmax_inside'" in json.dumps(why)


def test_raw_log_with_soak_handler_frames_is_titled_by_them(tmp_path):
    """An engine log soak did not record as events (a worker's stderr kept as a file): the
    handler's file-offset frames are read and symbolized the same way."""
    from soak.catalog.classify import classify_log
    from soak.catalog.loader import load_catalog

    plan = {"zero_work": True, "faults": [{"kind": "crash", "at": 0, "in": "soak_test_softmax_inside"}]}
    proc = _drive_runner([str(ensure_built("soak-runner"))], plan, tmp_path)
    assert proc.returncode == -signal.SIGSEGV
    log = tmp_path / "stderr.txt"
    log.write_bytes(b"some engine line\n" + proc.stderr)
    result = classify_log(log, load_catalog())
    crash = next(d for d in result["findings"] if d["kind"] == "crash")
    assert crash["signature_text"] == "crash/?: SIGSEGV in soak_test_softmax_inside"


def test_faulthandler_enabled_after_the_handler_still_gives_the_faulting_frame(tmp_path):
    """faulthandler.enable() after soak's handler runs first, then raises the signal again
    into soak's: the frames still lead to the fault (libc's raise and the signal frame are
    skipped in the title)."""
    program = ("import ctypes, sys, faulthandler\nlib = ctypes.CDLL(sys.argv[1])\nlib.soak_crash_install(2)\n"
               "faulthandler.enable()\nctypes.string_at(0)\n")
    proc = subprocess.run([sys.executable, "-c", program, str(ensure_built("soak_crash"))], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in proc.stderr
    title = backtrace.title_frame(proc.stderr.splitlines())
    # ctypes' C function that faulted (its module and offset where _ctypes is stripped)
    assert title == "string_at" or title.startswith("_ctypes."), title

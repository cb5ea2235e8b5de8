"""`soak classify FILE`: engine logs soak did not record (issue 11).

The MNN text is real: pip MNN's own output, captured here as a user would
(`python app.py > out.txt`), and the logcat lines of alibaba/MNN#2391.  The
logcat and bugreport envelopes are Android's documented formats
(`logcat -v threadtime`, `-v brief`, `getprop`) around those real lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soak.catalog.classify import classify_log
from soak.catalog.loader import load_catalog
from soak.cli import main

TINY = Path(__file__).resolve().parents[2] / "soak" / "models" / "qwen2-tiny"
APP = """
import sys
import MNN.llm as llm
m = llm.create(sys.argv[1])
m.load()
print(m.response("hello", False))
"""
# alibaba/MNN#2391 (Android 11, Adreno): the libCB failure, then MNN's fallback
REPORT_2391 = ["E/Adreno-CB: <clGetPlatformIDs:2606>: Fatal: Failed to open libCB from libOpenCL",
               "I/MNNJNI: CL ERROR CODE : -30, info:getPlatform",
               "I/MNNJNI: Can't Find type=3 backend, use 0 instead"]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def pip_mnn_stdout(tmp_path_factory) -> list[str]:
    """pip MNN (built without OpenCL) asked for OpenCL: its real stdout."""
    d = tmp_path_factory.mktemp("pipmnn")
    model = d / "model"
    shutil.copytree(TINY, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["backend_type"] = "opencl"
    (model / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-c", APP, str(model / "config.json")], cwd=d,
                          capture_output=True, text=True, timeout=120)
    out = (proc.stdout + proc.stderr).splitlines()
    assert "Can't Find type=3 backend, use 0 instead" in out
    return out


def test_pip_mnn_stdout_is_triaged(tmp_path, catalog, capsys, pip_mnn_stdout):
    log = tmp_path / "out.txt"
    log.write_text("\n".join(pip_mnn_stdout) + "\n")
    result = classify_log(log, catalog)
    (row,) = result["causes"]
    assert row["fault_id"] == "soak-cpu-fallback"
    assert result["log"]["format"] == "llm_stdout"
    assert result["log"]["context_read"]["backend"] == "opencl"
    assert result["log"]["context_read"]["backend_actual"] == "cpu"
    assert "mnn_version" in result["log"]["context_missing"]
    assert main(["classify", str(log)]) == 0
    out = capsys.readouterr().out
    assert "could not read from the log: " in out and "backend opencl->cpu" in out
    assert not (tmp_path / "classification.json").exists()  # a log file is only read


def _threadtime(lines, pid=4242, tag="MNNJNI"):
    return [f"12-01 03:04:{5 + n // 100:02d}.{n % 1000:03d}  {pid}  {pid + 7} I {tag:<8}: {x}" for n, x in enumerate(lines)]


def test_logcat_threadtime_keeps_mnn_lines_only(tmp_path, catalog, pip_mnn_stdout):
    other = ["12-01 03:04:05.001  1000  1000 I ActivityManager: Start proc 4242:com.example.chat/u0a123 for activity",
             "12-01 03:04:05.002  4242  4242 I MNNJNI  : ordinary line"]
    log = tmp_path / "logcat.txt"
    log.write_text("\n".join(other + _threadtime(pip_mnn_stdout)) + "\n")
    result = classify_log(log, catalog)
    assert result["log"]["format"] == "logcat-threadtime"
    assert result["log"]["engine_lines"] == len(pip_mnn_stdout) + 1  # ActivityManager dropped
    assert [c["fault_id"] for c in result["causes"]] == ["soak-cpu-fallback"]
    assert result["context"]["os"] == "android"


def test_logcat_brief_from_report_2391(tmp_path, catalog):
    log = tmp_path / "brief.txt"
    log.write_text("\n".join(REPORT_2391) + "\n")
    result = classify_log(log, catalog)
    assert result["log"]["format"] == "logcat-brief"
    (row,) = result["causes"]
    # the driver's libCB line comes first: the row is it; MNN's -30 and the fallback are the
    # same catalog fault (one row, three findings), not causes of their own
    assert row["kind"] == "error_line" and "libCB" in row["signature_text"]
    assert row["fault_id"] == "mnn-2391-adreno-libcb" and len(row["findings"]) == 3


def test_bugreport_context_and_crash(tmp_path, catalog):
    props = ["[ro.product.model]: [SM-S9180]", "[ro.build.version.release]: [14]", "[ro.hardware.egl]: [adreno]"]
    crash = ["12-01 03:04:09.100  4242  4249 F libc    : Fatal signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), "
             "fault addr 0x0 in tid 4249 (llm_demo), pid 4242 (llm_demo)",
             "12-01 03:04:09.300  4300  4300 F DEBUG   : #00 pc 00000000001a2b3c  /data/local/tmp/libMNN_CL.so"]
    text = (["========================================================", "== dumpstate: 2026-12-01 03:05:00",
             "------ SYSTEM PROPERTIES (getprop) ------"] + props
            + ["------ SYSTEM LOG (logcat -v threadtime -v printable -v uid -d *:v) ------"]
            + _threadtime(["Map error dequantBufferMap == nullptr "]) + crash)
    log = tmp_path / "bugreport.txt"
    log.write_text("\n".join(text) + "\n")
    result = classify_log(log, catalog)
    assert result["log"]["format"] == "bugreport" and result["log"]["crashes"] == 1
    read = result["log"]["context_read"]
    assert read["device_model"] == "SM-S9180" and read["gpu_vendor"] == "adreno" and read["os"] == "android"
    (row,) = result["causes"]
    # the map error at weight upload is the cause; the crash is the same catalog fault (its
    # last lines hold the map error), so it is in the row, and makes it critical
    assert row["kind"] == "error_line" and row["kinds"] == ["error_line", "crash"]
    assert row["severity"] == "critical"
    crash_finding = next(d for d in result["findings"] if d["kind"] == "crash")
    assert crash_finding["sample"]["signal"] == "SIGSEGV" and "libMNN_CL.so" in " ".join(crash_finding["sample"]["last_lines"])


def test_shell_segfault_after_map_error(tmp_path, catalog):
    """llm_demo under a shell, one clCreateBuffer failing at weight upload
    (measured on MNN 3.6.1 + PoCL): the map error, then the shell's message."""
    log = tmp_path / "demo.txt"
    log.write_text("config path is /models/qwen2/config.json\nMap error dequantBufferMap == nullptr \n"
                   "Segmentation fault (core dumped)\n")
    result = classify_log(log, catalog)
    (row,) = result["causes"]
    assert "crash" in row["kinds"] and row["severity"] == "critical"
    assert result["log"]["context_read"]["model_name"] == "qwen2"


@pytest.mark.parametrize("content,why", [
    (b"", "is empty"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "binary"),
    (b"just some notes\nnothing from an engine\n", "no MNN engine line"),
])
def test_unreadable_input_exits_3(tmp_path, capsys, content, why):
    p = tmp_path / "x.log"
    p.write_bytes(content)
    assert main(["classify", str(p)]) == 3
    err = capsys.readouterr().err
    assert why in err and "hint:" in err and "Traceback" not in err


def test_a_run_folders_own_engine_log_is_never_bad_input(tmp_path, catalog):
    """Whatever the engine wrote (nothing, binary bytes) its run still classifies."""
    from soak.catalog.classify import classify_run

    for name, content in (("empty", b""), ("binary", b"\x00\x01garbage\xff\xfe\nCan't Find type=3 backend, use 0 instead\n")):
        run = tmp_path / name
        run.mkdir()
        (run / "engine.log").write_bytes(content)
        result = classify_run(run, catalog, write=False)
        assert [c["kind"] for c in result["causes"]] == ([] if name == "empty" else ["cpu_fallback"])


def test_a_tombstone_in_logcat_titles_the_crash_by_its_frame(tmp_path, catalog):
    """A logcat with libc's line and crash_dump's report (tag DEBUG, its own pid): the crash is
    titled by the first frame outside libc, demangled, however long the report before it."""
    def debug(text):
        return f"12-01 03:04:09.300  4300  4300 F DEBUG   : {text}"

    lines = _threadtime(["Map error dequantBufferMap == nullptr "]) + [
        "12-01 03:04:09.100  4242  4249 F libc    : Fatal signal 6 (SIGABRT), code -1 (SI_QUEUE) in tid 4249 "
        "(llm_demo), pid 4242 (llm_demo)",
        debug("*** *** *** *** *** *** *** *** *** *** *** *** *** *** *** ***"),
        debug("pid: 4242, tid: 4249, name: llm_demo  >>> ./llm_demo <<<"),
        debug("signal 6 (SIGABRT), code -1 (SI_QUEUE), fault addr --------"),
        *[debug(f"    x{i}  0000000000000000  x{i + 1}  0000007fc0de1000") for i in range(0, 64, 2)],
        debug("backtrace:"),
        debug("      #00 pc 000000000004e8d0  /apex/com.android.runtime/lib64/bionic/libc.so (abort+168)"),
        debug("      #01 pc 00000000000a1b2c  /data/local/tmp/libMNN_CL.so (_ZN3MNN6OpenCL21AttentionBufExecution8on"
              "ResizeERKSt6vectorIPNS_6TensorESaIS4_EES8_+572) (BuildId: 4567)"),
    ]
    log = tmp_path / "logcat.txt"
    log.write_text("\n".join(lines) + "\n")
    result = classify_log(log, catalog)
    crash = next(d for d in result["findings"] if d["kind"] == "crash")
    assert crash["signature_text"] == "crash/?: SIGABRT in MNN::OpenCL::AttentionBufExecution::onResize"


def test_gdb_backtrace_after_llm_demo_output_names_the_opencl_kernel(tmp_path, catalog):
    """llm_demo's output with gdb's `bt` pasted after the crash, as in a bug report."""
    log = tmp_path / "demo.txt"
    log.write_text(
        "config path is /models/qwen2/config.json\n"
        "Thread 7 \"llm_demo\" received signal SIGSEGV, Segmentation fault.\n"
        "#0  0x00007fffd4c0e1a3 in _pocl_kernel_softmax_inside_workgroup () from "
        "/root/.cache/pocl/kcache/KC/OKAD/softmax_inside/64-1-1-goffs0-smallgrid/softmax_inside.so\n"
        "#1  0x00007ffff7a9c1b2 in ?? () from /usr/lib/x86_64-linux-gnu/pocl/libpocl-devices-pthread.so\n"
        "#2  0x00007ffff7c94ac3 in start_thread (arg=<optimized out>) at ./nptl/pthread_create.c:442\n")
    result = classify_log(log, catalog)
    crash = next(d for d in result["findings"] if d["kind"] == "crash")
    assert crash["signature_text"] == "crash/?: SIGSEGV in softmax_inside (OpenCL kernel)"
    row = next(c for c in result["causes"] if "crash" in c["kinds"])
    assert row["fault_id"] == "soak-pocl-softmax-inside-crash"

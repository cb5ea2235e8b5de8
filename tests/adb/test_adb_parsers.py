"""Parsers for device output, on text captured from real phones."""

from __future__ import annotations

import pytest

from soak.targets.adb import meminfo as memory, probe, thermal
from soak.targets.adb.logcat import line_pid
from soak.targets.adb.target import parse_spec
from soak.errors import BadInput

MEMINFO_PIXEL = """Applications Memory Usage (in Kilobytes):
Uptime: 433195 Realtime: 433195

** MEMINFO in pid 12345 [soak-runner] **
                   Pss  Private  Private  SwapPss      Rss     Heap     Heap     Heap
                 Total    Dirty    Clean    Dirty    Total     Size    Alloc     Free
                ------   ------   ------   ------   ------   ------   ------   ------
  Native Heap   812345   812000        0       12   813000        0        0        0
  EGL mtrack     20480    20480        0        0    20480
   GL mtrack   1048576  1048576        0        0  1048576
        TOTAL  1950000  1900000     3000       12  1990000        0        0        0

 App Summary
                       Pss(KB)                        Rss(KB)
                        ------                         ------
           Java Heap:        0                              0
         Native Heap:   812000                         813000
            Graphics:  1069056                        1069056
           TOTAL PSS:  1950000            TOTAL RSS:  1990000       TOTAL SWAP PSS:       12
"""


def test_meminfo():
    m = memory.parse_meminfo(MEMINFO_PIXEL)
    assert m["total_pss"] == 1950000 * 1024 and m["total_rss"] == 1990000 * 1024
    assert m["graphics"] == 1069056 * 1024 and m["gl_mtrack"] == 1048576 * 1024 and m["egl_mtrack"] == 20480 * 1024
    assert m["native_heap"] == 812000 * 1024 and m["total_swap_pss"] == 12 * 1024


def test_kgsl_and_mali():
    assert memory.parse_kgsl("gpumem_mapped 4096\ngpumem_unmapped 8192\nbogus x\n") == {
        "gpumem_mapped": 4096, "gpumem_unmapped": 8192}
    mali = ("Mali0 14336\n  kctx-0x0000000012345678      1024   4321   0\n"
            "  kctx-0x0000000087654321       256   999   0\n")
    assert memory.parse_mali(mali, 4321) == 1024 * 4096
    assert memory.parse_mali(mali, 5) is None


def test_getprop_and_gles():
    props = probe.parse_getprop("[ro.product.model]: [Pixel 8]\n[ro.board.platform]: [zuma]\n[empty]: []\n")
    assert props == {"ro.product.model": "Pixel 8", "ro.board.platform": "zuma", "empty": ""}
    gles = probe.parse_gles("junk\nGLES: ARM, Mali-G715, OpenGL ES 3.2 v1.r44p1-01eac0.3f3b9f4a0b94\n")
    assert gles["vendor"] == "ARM" and gles["renderer"] == "Mali-G715" and gles["driver"] is None
    adreno = probe.parse_gles("GLES: Qualcomm, Adreno (TM) 750, OpenGL ES 3.2 V@0762.10 (GIT@8f2b3e, I1d5f) (Date:01/01/24)")
    assert adreno["renderer"] == "Adreno (TM) 750" and adreno["driver"] == "0762.10"
    assert probe.parse_gles("no gles here") is None


def test_thermal():
    zones = thermal.parse_zones("cpu-0-0-usr 41200\nbattery 29\nbad line x\n")
    assert zones == {"cpu-0-0-usr": 41.2, "battery": 29.0}
    ts = thermal.parse_thermalservice(
        "Thermal Status: 2\nCached temperatures:\n\tTemperature{mValue=45.2, mType=0, mName=cpu0, mStatus=2}\n")
    assert ts["status"] == 2 and ts["status_name"] == "moderate" and ts["temperatures"] == {"cpu0": 45.2}


def test_logcat_pid_column():
    assert line_pid(b"11-24 21:30:00.123  1234  1250 I MNNJNI  : CL ERROR CODE : -5, info:x") == 1234
    assert line_pid(b"--------- beginning of main") is None


def test_target_strings():
    assert parse_spec("adb").serial is None
    s = parse_spec("adb:192.168.1.7:5555@farm.example:5037,runner=/tmp/r,root=/data/local/tmp/x/,wait=30")
    assert s.serial == "192.168.1.7:5555" and s.server == ("farm.example", 5037)
    assert s.runner == "/tmp/r" and s.root == "/data/local/tmp/x" and s.wait_s == 30.0
    assert parse_spec("adb@127.0.0.1:5038").server == ("127.0.0.1", 5038)
    for bad in ("adbx", "adb:a,b", "adb:s,wait=soon", "local"):
        with pytest.raises(BadInput):
            parse_spec(bad)


# The crash buffer after a runner crash (`logcat -b crash -d -v threadtime`): libc's line comes
# from the runner's pid, the report from crash_dump64's own pid (tag DEBUG).  Another
# process's report is in the buffer too.
CRASH_BUFFER = """\
12-07 13:00:00.100  4242  4250 F libc    : Fatal signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr 0x0 in tid 4250 (soak-runner), pid 4242 (soak-runner)
12-07 13:00:00.180  5000  5000 F DEBUG   : *** *** *** *** *** *** *** *** *** *** *** *** *** *** *** ***
12-07 13:00:00.180  5000  5000 F DEBUG   : Build fingerprint: 'soak/fakephone/fakephone:14/TEST/1:userdebug/test-keys'
12-07 13:00:00.180  5000  5000 F DEBUG   : pid: 4242, tid: 4250, name: soak-runner  >>> /data/local/tmp/soak/bin/soak-runner <<<
12-07 13:00:00.180  5000  5000 F DEBUG   : signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr 0x0000000000000000
12-07 13:00:00.180  5000  5000 F DEBUG   :     x0  0000000000000000  x1  0000007fc0de1000
12-07 13:00:00.181  5000  5000 F DEBUG   : backtrace:
12-07 13:00:00.181  5000  5000 F DEBUG   :       #00 pc 00000000000a1b2c  /data/local/tmp/soak/lib/libMNN_CL.so (_ZN3MNN6OpenCL21AttentionBufExecution8onResizeERKSt6vectorIPNS_6TensorESaIS4_EES8_+572) (BuildId: 4567)
12-07 13:00:00.181  5000  5000 F DEBUG   :       #01 pc 0000000000123456  /data/local/tmp/soak/lib/libMNN.so (MNN::Pipeline::allocMemory(bool, bool)+96)
12-07 13:00:00.181  5000  5000 F DEBUG   : 
12-07 13:00:00.181  5000  5000 F DEBUG   : memory near x1:
12-07 13:00:00.181  5000  5000 F DEBUG   :       #00 pc 0000000000001111  /system/lib64/libother.so (other+1)
12-07 13:00:01.000  6000  6000 F DEBUG   : pid: 4300, tid: 4300, name: other  >>> other <<<
12-07 13:00:01.000  6000  6000 F DEBUG   : backtrace:
12-07 13:00:01.000  6000  6000 F DEBUG   :       #00 pc 0000000000002222  /system/lib64/libother.so (other_crash+8)
"""


def test_crash_report_takes_crash_dumps_report_of_the_pid():
    from soak.backtrace import title_frame
    from soak.targets.adb.health import crash_report

    lines = crash_report(CRASH_BUFFER.splitlines(), 4242)
    assert "Fatal signal 11" in lines[0]
    assert any("pid: 4242, tid: 4250" in x for x in lines)
    assert any(x.endswith("signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr 0x0000000000000000") for x in lines)
    assert sum("#0" in x for x in lines) == 2  # the crashing thread's frames only
    assert not any("other" in x for x in lines)
    assert title_frame(lines) == "MNN::OpenCL::AttentionBufExecution::onResize"


def test_crash_report_from_a_tombstone_file():
    from soak.targets.adb.health import crash_report

    tomb = ["/data/tombstones/tombstone_03", "*** *** ***", "pid: 4242, tid: 4242, name: soak-runner  >>> x <<<",
            "signal 6 (SIGABRT), code -1 (SI_QUEUE), fault addr --------", "Abort message: 'bad'",
            "    x0  0000000000000000", "backtrace:",
            "      #00 pc 000000000004e8d0  /apex/com.android.runtime/lib64/bionic/libc.so (abort+168)",
            "      #01 pc 0000000000001234  /data/local/tmp/soak/lib/libengine.so (engine_step+12)", "",
            "stack:", "      #00 pc 0000000000000001  /x.so"]
    lines = crash_report(tomb, 4242)
    assert lines[0] == "/data/tombstones/tombstone_03" and "Abort message: 'bad'" in lines
    assert lines[-1].endswith("(engine_step+12)")

"""The interposer is generated from whatever OpenCL headers the machine has: Debian bookworm's
(/usr/include/CL, 2023.02) and the newest Khronos set (tests/data/khronos-opencl-headers, with
cl_function_types.h, as CUDA images ship), built and run on PoCL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soak.cl import interposer
from soak.cl.trace import TraceReader
from soak.errors import OpenCLSetupError

ROOT = Path(__file__).resolve().parents[2]
GEN = ROOT / "native" / "interposer" / "gen_wrappers.py"
KHRONOS = ROOT / "tests" / "data" / "khronos-opencl-headers"
DEBIAN = Path("/usr/include")


def generate(include_dir: Path, out: Path) -> str:
    proc = subprocess.run([sys.executable, str(GEN), "--cc", "cc", "--include-dir", str(include_dir),
                           "--out-dir", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (out / "cl_wrappers.c").read_text()


def prototypes(code: str) -> dict[str, str]:
    return dict(re.findall(r"^SOAK_EXPORT \w[\w\s\*]*? CL_API_CALL (cl\w+)\((.*)\)$", code, re.M))


@pytest.mark.parametrize("include_dir", [DEBIAN, KHRONOS], ids=["bookworm", "khronos"])
def test_every_parameter_keeps_its_name(include_dir, tmp_path):
    assert (include_dir / "CL" / "cl.h").is_file()
    code = generate(include_dir, tmp_path)
    protos = prototypes(code)
    assert len(protos) > 150
    # a parameter name mistaken for a type would leave "T name soak_aN"
    assert not re.search(r"\w\s+soak_a\d", code)
    assert protos["clEnqueueNDRangeKernel"] == (
        "cl_command_queue command_queue, cl_kernel kernel, cl_uint work_dim, const size_t * global_work_offset, "
        "const size_t * global_work_size, const size_t * local_work_size, cl_uint num_events_in_wait_list, "
        "const cl_event * event_wait_list, cl_event * event")
    assert "soak_note_param(&soak_c, soak_params_clGetDeviceInfo" in code
    assert '{0x102bu, "CL_DEVICE_NAME"}' in code


def test_khronos_headers_use_function_types_and_wrap_more(tmp_path):
    kh = generate(KHRONOS, tmp_path / "kh")
    deb = generate(DEBIAN, tmp_path / "deb")
    assert "cl_function_types.h" in kh.splitlines()[1]
    assert "Apache License" in (KHRONOS / "LICENSE").read_text()
    assert set(prototypes(deb)) <= set(prototypes(kh))


def test_interposer_builds_and_runs_with_khronos_headers(tmp_path, monkeypatch):
    """SOAK_CL_INCLUDE_DIR points the build at other headers; the result works on PoCL."""
    monkeypatch.setenv("SOAK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(interposer.HEADERS_ENV, str(KHRONOS))
    lib = interposer.interposer_library()
    build = lib.parent
    cache = (build / "CMakeCache.txt").read_text()
    assert f"SOAK_CL_INCLUDE_DIR:PATH={KHRONOS}" in cache
    assert "cl_function_types.h" in (build / "generated" / "cl_api.h").read_text()
    proc = subprocess.run([shutil.which("cmake"), "--build", str(build), "--target", "cl_workload", "-j", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run_dir = tmp_path / "run"
    env = dict(os.environ)
    env.update(interposer.prepare({"faults": "clEnqueueNDRangeKernel=-5@nth:2"}, run_dir,
                                  interposer_dir=build, mnn_paths=()))
    out = subprocess.run([str(build / "testprog" / "cl_workload"), "--iterations", "3", "--probe-param", "0x4000"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "result clEnqueueNDRangeKernel 2 -5" in out.stdout and "check=1" in out.stdout
    errs = [r for r in TraceReader(run_dir).poll() if r["type"] == "error"]
    assert [(e["api"], e.get("kernel"), e.get("param_name")) for e in errs] == [
        ("clEnqueueNDRangeKernel", "vadd", None), ("clGetDeviceInfo", None, "CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV")]


def test_bad_header_dir_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(interposer.HEADERS_ENV, str(tmp_path))
    with pytest.raises(OpenCLSetupError, match="no CL/cl.h there"):
        interposer.interposer_library()

"""Every bad input gets one clear message, a distinct exit code and no traceback."""

import json
import shutil
import struct
import subprocess

import pytest

from coresupport import soak_cli
from soak.errors import ExitCode
from soak.native_build import build_test_engine


def compile_lib(tmp_path, name, source):
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / f"lib{name}.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out


def model_file(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text("{}")
    return cfg


def assert_clean_error(proc, code, *needles):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_missing_engine_library(tmp_path):
    proc = soak_cli("run", "--engine", "lib", "--engine-lib", str(tmp_path / "nope.so"),
                    "--model", str(model_file(tmp_path)), "--out", str(tmp_path))
    assert_clean_error(proc, ExitCode.LIBRARY_NOT_FOUND, "engine library not found", "nope.so")


def test_missing_plugin(tmp_path):
    proc = soak_cli("run", "--engine", "lib", "--engine-lib", str(build_test_engine()),
                    "--plugin", str(tmp_path / "libMNN_CL.so"), "--model", str(model_file(tmp_path)),
                    "--out", str(tmp_path))
    assert_clean_error(proc, ExitCode.LIBRARY_NOT_FOUND, "backend plugin not found", "libMNN_CL.so")


def test_library_missing_a_symbol(tmp_path):
    lib = compile_lib(tmp_path, "half", "unsigned soak_engine_abi_version(void){return 1;}\n")
    proc = soak_cli("run", "--engine", "lib", "--engine-lib", str(lib), "--model", str(model_file(tmp_path)),
                    "--out", str(tmp_path), "--iterations", "2")
    assert_clean_error(proc, ExitCode.MISSING_SYMBOL, "soak_engine_create", "soak_engine.h")


def test_abi_mismatch(tmp_path):
    names = ["name", "create", "set_config", "load", "respond", "reset", "reinit", "status", "perf", "destroy"]
    body = "unsigned soak_engine_abi_version(void){return 99;}\n" + "".join(
        f"void* soak_engine_{n}(void){{return 0;}}\n" for n in names)
    lib = compile_lib(tmp_path, "future", body)
    proc = soak_cli("run", "--engine", "lib", "--engine-lib", str(lib), "--model", str(model_file(tmp_path)),
                    "--out", str(tmp_path), "--iterations", "2")
    assert_clean_error(proc, ExitCode.ABI_MISMATCH, "ABI v99", "v1")


def test_wrong_architecture(tmp_path):
    lib = tmp_path / "libarm.so"
    shutil.copy(build_test_engine(), lib)
    data = bytearray(lib.read_bytes())
    data[18:20] = struct.pack("<H", 183)  # e_machine = aarch64
    lib.write_bytes(bytes(data))
    proc = soak_cli("run", "--engine", "lib", "--engine-lib", str(lib), "--model", str(model_file(tmp_path)),
                    "--out", str(tmp_path))
    assert_clean_error(proc, ExitCode.WRONG_ARCH, "built for aarch64")


def test_not_a_library(tmp_path):
    lib = tmp_path / "script.so"
    lib.write_text("#!/bin/sh\n")
    proc = soak_cli("run", "--engine", "lib", "--engine-lib", str(lib), "--model", str(model_file(tmp_path)),
                    "--out", str(tmp_path))
    assert_clean_error(proc, ExitCode.WRONG_ARCH, "not an ELF shared library")


def test_wrong_model_path(tmp_path):
    proc = soak_cli("run", "--engine", "mnn-pip", "--model", str(tmp_path / "missing"), "--out", str(tmp_path))
    assert_clean_error(proc, ExitCode.BAD_INPUT, "model config not found", "--model")


def test_model_config_not_json(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    proc = soak_cli("run", "--engine", "mnn-pip", "--model", str(bad), "--out", str(tmp_path))
    assert_clean_error(proc, ExitCode.BAD_INPUT, "not valid JSON")


def test_pip_mnn_refuses_opencl(tmp_path):
    proc = soak_cli("run", "--engine", "mnn-pip", "--model", str(model_file(tmp_path)), "--backend", "opencl",
                    "--out", str(tmp_path))
    assert_clean_error(proc, ExitCode.BAD_INPUT, "CPU only", "--engine mnn")


@pytest.mark.parametrize("content,needle", [("[{\"kind\": \"explode\"}]", "unknown kind \"explode\""),
                                            ("[{\"kind\": \"crash\", \"at\": [3, \"x\"]}]", "\"at\" entries"),
                                            ("{oops", "not valid JSON"), ("42", "JSON list")])
def test_bad_fault_plan(tmp_path, content, needle):
    # the engine's own parser judges the plan before any worker starts: exit 3, one line
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    proc = soak_cli("run", "--fault-plan", str(plan), "--out", str(tmp_path), "--iterations", "3")
    assert_clean_error(proc, ExitCode.BAD_INPUT, needle)


def test_missing_fault_plan(tmp_path):
    proc = soak_cli("run", "--fault-plan", str(tmp_path / "none.json"), "--out", str(tmp_path))
    assert_clean_error(proc, ExitCode.BAD_INPUT, "fault plan not found")


@pytest.mark.parametrize("args,needle", [(["--duration", "soon"], "bad duration"),
                                         (["--recovery", "reboot"], "unknown recovery step"),
                                         (["--iterations", "-1"], "--iterations")])
def test_bad_options(tmp_path, args, needle):
    proc = soak_cli("run", "--demo", "--out", str(tmp_path), *args)
    assert_clean_error(proc, ExitCode.BAD_INPUT, needle)


def test_existing_run_folder_is_not_overwritten(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "events.jsonl").write_text("precious\n")
    proc = soak_cli("run", "--demo", "--out", str(tmp_path), "--run-id", "r1")
    assert_clean_error(proc, ExitCode.BAD_INPUT, "already exists")
    assert (tmp_path / "r1" / "events.jsonl").read_text() == "precious\n"


def test_replay_of_unknown_iteration(tmp_path):
    assert soak_cli("run", "--demo", "--iterations", "3", "--out", str(tmp_path), "--run-id", "r").returncode == 0
    proc = soak_cli("replay", str(tmp_path / "r"), "--iteration", "99")
    assert_clean_error(proc, ExitCode.BAD_INPUT, "iteration 99 is not in")


def test_replay_of_a_non_run(tmp_path):
    proc = soak_cli("replay", str(tmp_path), "--iteration", "1")
    assert_clean_error(proc, ExitCode.BAD_INPUT, "not a soak run folder")


def test_usage_error_exit_code():
    proc = soak_cli("run", "--no-such-flag")
    assert proc.returncode == ExitCode.USAGE


def test_missing_compiler_toolchain_is_named(tmp_path):
    # a fresh cache (nothing built yet) and a PATH without cmake or cc
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    proc = soak_cli("run", "--demo", "--out", str(tmp_path), "--iterations", "2",
                    env={"PATH": str(empty_bin), "SOAK_CACHE_DIR": str(tmp_path / "cache")})
    assert_clean_error(proc, ExitCode.BUILD_FAILED, "'cmake' is not on PATH", "apt-get install cmake")


def test_broken_native_source_is_reported_with_the_compiler_error(tmp_path, monkeypatch):
    import soak.native_build as nb

    fake = tmp_path / "native"
    (fake / "include").mkdir(parents=True)
    (fake / "test_engine").mkdir()
    (fake / "test_engine" / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(t C)\nadd_library(soak_test_engine SHARED te.c)\n")
    (fake / "test_engine" / "te.c").write_text('#include "no_such_header.h"\n')
    monkeypatch.setattr(nb, "NATIVE_DIR", fake)
    monkeypatch.setenv("SOAK_CACHE_DIR", str(tmp_path / "cache"))
    from soak.errors import BuildFailed

    with pytest.raises(BuildFailed) as err:
        nb.ensure_built("soak_test_engine")
    assert "no_such_header.h" in err.value.message + (err.value.hint or "")


@pytest.mark.parametrize("value", ["nan", "-1"])
def test_bad_stall_timeout(tmp_path, value):
    proc = soak_cli("run", "--engine", "test", "--timeout-stall", value, "--out", str(tmp_path), "--iterations", "1")
    assert_clean_error(proc, ExitCode.BAD_INPUT, "--timeout-stall")

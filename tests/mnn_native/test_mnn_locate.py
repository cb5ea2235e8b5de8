"""soak.engine.mnn_native without a real MNN: finding, versioning, errors.

These run everywhere (no MNN needed): they build fake MNN folders and check
that every way a user can point at the wrong thing gives one clear error
with its exit code, including the shim's CMake checks.
"""

from __future__ import annotations

import pytest

from soak.engine import mnn_native
from soak.errors import BadInput, BuildFailed, ExitCode, LibraryNotFound

HEADER = """#define MNN_VERSION_MAJOR 3
#define MNN_VERSION_MINOR 6
#define MNN_VERSION_PATCH 1
"""


@pytest.fixture(autouse=True)
def no_mnn_environment(monkeypatch):
    """These tests name their folders; a real SOAK_MNN_BUILD/SOURCE must not leak in."""
    monkeypatch.delenv(mnn_native.ENV_BUILD, raising=False)
    monkeypatch.delenv(mnn_native.ENV_SOURCE, raising=False)


def fake_build(root, libs=("libllm.so", "libMNN.so", "libMNN_CL.so"), source=True):
    build = root / "build"
    build.mkdir()
    for name in libs:
        (build / name).write_bytes(b"\x7fELF fake " + name.encode())
    src = root / "src"
    if source:
        (src / "include" / "MNN").mkdir(parents=True)
        (src / "include" / "MNN" / "MNNDefine.h").write_text(HEADER)
        (build / "CMakeCache.txt").write_text(f"CMAKE_HOME_DIRECTORY:INTERNAL={src}\n")
    return build, src


def test_locate_finds_libraries_version_and_source_from_cmake_cache(tmp_path, monkeypatch):
    build, src = fake_build(tmp_path)
    monkeypatch.delenv(mnn_native.ENV_SOURCE, raising=False)
    found = mnn_native.locate(build)
    assert found.libllm == build / "libllm.so"
    assert found.libmnn == build / "libMNN.so"
    assert found.plugins == [build / "libMNN_CL.so"]
    assert found.opencl_plugin() == build / "libMNN_CL.so"
    assert found.source_dir == src
    assert found.version == "3.6.1"
    hashes = found.library_hashes()
    assert set(hashes) == {"libllm.so", "libMNN.so", "libMNN_CL.so"}
    assert hashes["libllm.so"] == mnn_native.sha256_file(build / "libllm.so")
    assert hashes["libllm.so"] != hashes["libMNN.so"]
    assert found.manifest()["version"] == "3.6.1"


def test_locate_uses_the_environment(tmp_path, monkeypatch):
    build, src = fake_build(tmp_path)
    monkeypatch.setenv(mnn_native.ENV_BUILD, str(build))
    monkeypatch.setenv(mnn_native.ENV_SOURCE, str(src))
    assert mnn_native.locate().build_dir == build.resolve()


def test_version_from_library_when_no_headers(tmp_path):
    build, _ = fake_build(tmp_path, source=False)
    (build / "libMNN.so").write_bytes(b"\x7fELF\x00junk\x003.6.1\x00more")
    found = mnn_native.locate(build)
    assert found.source_dir is None
    assert found.version == "3.6.1"


def test_no_opencl_plugin_is_not_an_error(tmp_path):
    build, _ = fake_build(tmp_path, libs=("libllm.so", "libMNN.so"))
    found = mnn_native.locate(build)
    assert found.plugins == [] and found.opencl_plugin() is None


def test_unset_environment_names_the_variable(monkeypatch):
    monkeypatch.delenv(mnn_native.ENV_BUILD, raising=False)
    with pytest.raises(LibraryNotFound) as info:
        mnn_native.locate()
    assert "SOAK_MNN_BUILD" in info.value.message
    assert "LLM and OpenCL options" in info.value.hint
    assert info.value.exit_code == ExitCode.LIBRARY_NOT_FOUND


def test_missing_folder(tmp_path):
    with pytest.raises(LibraryNotFound, match="does not exist"):
        mnn_native.locate(tmp_path / "nope")


@pytest.mark.parametrize("missing, hint", [("libllm.so", "LLM option"), ("libMNN.so", "shared")])
def test_missing_library_names_it_and_the_fix(tmp_path, missing, hint):
    libs = [n for n in ("libllm.so", "libMNN.so") if n != missing]
    build, _ = fake_build(tmp_path, libs=libs)
    with pytest.raises(LibraryNotFound) as info:
        mnn_native.locate(build)
    assert missing in info.value.message
    assert hint in info.value.hint


def test_wrong_source_folder(tmp_path):
    build, _ = fake_build(tmp_path)
    with pytest.raises(BadInput, match="source folder"):
        mnn_native.locate(build, tmp_path / "nope")


def test_cache_state(tmp_path):
    assert mnn_native.cache_state(tmp_path) == "cold"
    (tmp_path / "mnn_cachefile.bin").write_bytes(b"")
    assert mnn_native.cache_state(tmp_path) == "cold"  # an empty file is no cache
    (tmp_path / "mnn_cachefile.bin").write_bytes(b"kernels")
    assert mnn_native.cache_state(tmp_path) == "warm"
    assert mnn_native.cache_state(str(tmp_path)) == "warm"


def test_cache_state_defaults_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert mnn_native.cache_state("") == "cold"
    (tmp_path / "mnn_cachefile.bin").write_bytes(b"x")
    assert mnn_native.cache_state(None) == "warm"


def test_build_shim_without_headers_says_which_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SOAK_CACHE_DIR", str(tmp_path / "cache"))
    build, src = fake_build(tmp_path)  # MNNDefine.h but no llm/llm.hpp
    with pytest.raises(BuildFailed) as info:
        mnn_native.build_shim(build, src)
    assert "no llm/llm.hpp" in info.value.message
    assert info.value.exit_code == ExitCode.BUILD_FAILED
    assert "build.log" in info.value.hint


def test_build_shim_with_headers_that_do_not_match_the_libraries(tmp_path, monkeypatch):
    monkeypatch.setenv("SOAK_CACHE_DIR", str(tmp_path / "cache"))
    build, src = fake_build(tmp_path)
    # A header with the right name but not MNN's API: the probe must refuse.
    (src / "include" / "llm").mkdir(parents=True)
    (src / "include" / "llm" / "llm.hpp").write_text("namespace MNN { namespace Transformer { } }\n")
    with pytest.raises(BuildFailed) as info:
        mnn_native.build_shim(build, src)
    assert "different MNN versions" in info.value.message


def test_build_shim_needs_a_source_folder(tmp_path, monkeypatch):
    build, _ = fake_build(tmp_path, source=False)
    monkeypatch.delenv(mnn_native.ENV_SOURCE, raising=False)
    with pytest.raises(BuildFailed, match="source folder unknown"):
        mnn_native.build_shim(build)

"""MNN's exact log lines (research notes §1.3) and the output checks."""

import pytest
from hypothesis import given, strategies as st

from soak.loop.checks import check_output, symptoms
from soak.logparse import parse_line


@pytest.mark.parametrize("line,code,name,info", [
    ("CL ERROR CODE : -5, info:run3d ", -5, "CL_OUT_OF_RESOURCES", "run3d"),
    ("I/MNNJNI: CL ERROR CODE : -30, info:getPlatform ", -30, "CL_INVALID_VALUE", "getPlatform"),
    ("CL ERROR CODE : -9999, info:clEvent ", -9999, "CL_NV_INVALID_MEM_ACCESS", "clEvent"),
    ("CL ERROR CODE : -36, info:image_to_nchw_buffer ", -36, "CL_INVALID_COMMAND_QUEUE", "image_to_nchw_buffer"),
    ("CL ERROR CODE : -33, info:setArg matmul_qk_decode ", -33, "CL_INVALID_DEVICE", "setArg matmul_qk_decode"),
    ("CL ERROR CODE : -1001, info:getPlatform ", -1001, "CL_PLATFORM_NOT_FOUND_KHR", "getPlatform"),
    ("CL ERROR CODE : -77, info:Raster ", -77, "CL_UNKNOWN(-77)", "Raster"),
])
def test_cl_error_lines(line, code, name, info):
    rec = parse_line(line)
    assert rec["kind"] == "cl_error" and (rec["code"], rec["name"], rec["info"]) == (code, name, info)


@pytest.mark.parametrize("line,pattern", [
    ("Map error key_ptr == nullptr ", "kv_map_error"),
    ("Map error value_ptr == nullptr ", "kv_map_error"),
    ("Map error dequantBufferMap == nullptr ", "map_error"),
    ("set1x1WeightLowMemory: Map error ptrCL == nullptr ", "map_error"),
    ("Alloc Buffer 1048576 error, code:-4 ", "alloc_buffer_error"),
    ("Alloc Image 512 x 151936 error, code:-40 ", "alloc_image_error"),
    ("OpenCL alloc buffer failed (STATIC), size=12345", "opencl_alloc_failed"),
    ("Build program failed, err:-11 ! ", "build_program_failed"),
    ("getKernel: softmax error, res:-46", "get_kernel_error"),
    ("OpenCL enqueue write error:-36", "enqueue_write_error"),
    ("[Error]: LLM in error state. Status: 4", "error_state"),
    ("[Error]: onForward returned no outputs. seqLen=12, inDecode=1, inputs=3, moduleKey=(0,0)", "no_outputs"),
    ("LLVM ERROR: Cannot select: intrinsic %llvm.bifrost.2586", "llvm_error"),
    ("Parsing OpenCL symbols error !!! ", "opencl_symbols_error"),
    ("Cache invalid, will be reset", "cache_invalid"),
    ("[MNN:LLM] Warning: sequence length 2100 exceeds max_position_embeddings (2048), output quality may degrade.",
     "context_overflow"),
    ("Can't open file:tmp/mnn_cachefile.bin", "cache_missing"),
])
def test_error_lines(line, pattern):
    rec = parse_line(line)
    assert rec["kind"] == "error_line" and rec["pattern"] == pattern


def test_codes_of_alloc_and_build_lines():
    assert parse_line("Alloc Buffer 64 error, code:-61 ")["code"] == -61
    assert parse_line("Build program failed, err:-11 ! ")["code"] == -11


def test_cpu_fallbacks():
    assert parse_line("Can't Find type=3 backend, use 0 instead")["used_type"] == 0
    assert parse_line("type=3 backend don't Support Low Power, use 0 instead")["reason"] == "low_power"


@pytest.mark.parametrize("line", ["The device supports: i8sdot:0, fp16:0", "hello world", "", "load tokenizer Done"])
def test_ordinary_lines(line):
    assert parse_line(line) is None


@given(st.text())
def test_parse_line_never_raises(text):
    parse_line(text)


def test_output_symptoms():
    assert symptoms(check_output("！".encode() * 40, 64)) == ["repetition"]
    assert symptoms(check_output(b"\xe4\xbd ok \xe4\xbd", 8)) == ["invalid_utf8"]
    assert symptoms(check_output(b"", 16)) == ["empty"]
    assert symptoms(check_output(b"", 0)) == []  # prefill only: nothing expected
    assert "garbage" in symptoms(check_output(bytes(range(1, 32)) * 2, 64))
    soup = "aбcдeфαβγ你好שלוםمرحباกขคअआ"  # letters from seven scripts: what a corrupted GPU emits
    assert "garbage" in symptoms(check_output(soup.encode(), 64))
    assert symptoms(check_output("Hello 你好 world, this is fine 世界".encode(), 64)) == []
    assert symptoms(check_output("The capital of France is Paris. 你好 🙂".encode(), 64)) == []


@given(st.binary(max_size=400))
def test_checks_never_raise(data):
    c = check_output(data, 64)
    assert 0 <= c["repetition"] <= 1 and 0 <= c["garbage"] <= 1

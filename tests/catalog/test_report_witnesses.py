"""Every report-seeded entry fires on its own report's lines in its own
context (the witness), and becomes a near miss when the context is moved.
Lines and contexts are those of research/mnn-opencl-faults.md §3."""

from __future__ import annotations

import pytest

from soak.catalog.classify import classify_run
from soak.catalog.loader import load_catalog

from _catalog_runs import cl_fault, crash, ctx, iteration, line_fault, make_run


def dev(name, vendor="", driver=None):
    return {"device": {"name": name, "vendor": vendor, "driver_version": driver}}


def bad(i, *symptoms, phase="decode"):
    return ("fault", {"iteration": i, "kind": "bad_output", "phase": phase, "symptoms": list(symptoms)})


ANDROID = {"os": "android"}
WITNESSES = {
    # id: (manifest changes, events, engine.log, a context change that makes it a near miss)
    "mnn-2023-android-linker-namespace": (
        {**ANDROID, "backend_actual": "cpu", "opencl": None},
        [line_fault(0, "Can't Find type=3 backend, use 0 instead", phase="load")],
        'E/linker: library "/system/vendor/lib64/libOpenCL.so" needed or dlopened by "/data/app/x/libMNN_CL.so" '
        'is not accessible for the namespace: [name="classloader-namespace"]\n', {"os": "linux"}),
    "mnn-2270-rk3588-no-libopencl": (
        {"backend_actual": "cpu", "opencl": dev("Mali-G610 r0p0", "ARM")},
        [line_fault(0, "OpenCL init error, fallback ... ", phase="init")], None, {"os": "android"}),
    "mnn-3380-radeon780m-build-11": (
        {"os": "windows", "model": {"family": "qwen2_5_vl", "params": 3.75e9},
         "opencl": dev("gfx1103", "Advanced Micro Devices, Inc.")},
        [line_fault(4, "Build program failed, err:-11 ! ")], None, {"os": "linux"}),
    "mnn-3175-mali-llvm-bifrost-abort": (
        {"opencl": dev("Mali-G52 r1p0", "ARM")},
        [crash(-1, "SIGABRT", ["LLVM ERROR: Cannot select: intrinsic %llvm.bifrost.2586",
                               "Aborted (core dumped)"], phase="load")], None, {"os": "android"}),
    "mnn-3571-pixel6a-valhall-abort": (
        {**ANDROID, "opencl": dev("Mali-G78", "ARM")},
        [crash(-1, "SIGABRT", ["signal 6 (SIGABRT), code -1 (SI_QUEUE), fault addr --------",
                               "#05 pc 0000000001b2c3d4  /vendor/lib64/egl/libGLES_mali.so (llvm::report_fatal_error)",
                               "#06 pc 0000000001b2c4e8  /vendor/lib64/egl/libGLES_mali.so "
                               "(llvm::SelectionDAGISel::CannotYetSelect)"], phase="load")], None, {"os": "linux"}),
    "mnn-4816-omni7b-enqueue-write-36": (
        {"model": {"family": "qwen2_5_omni", "params": 7.6e9}, "opencl": dev("Mali-G720-Immortalis MC10", "ARM")},
        [line_fault(2, "OpenCL enqueue write error:-36"), cl_fault(2, "CL ERROR CODE : -36, info:BinaryOp ", count=9),
         cl_fault(2, "CL ERROR CODE : -36, info:Raster ", count=30)], None,
        {"model": {"family": "qwen2", "params": 5e8}}),
    "mnn-4681-internvl-raster-clevent": (
        {"model": {"family": "internvl_chat", "params": 3.7e9}, "mnn_version": "3.6.1"},
        [cl_fault(0, "CL ERROR CODE : -36, info:raster_buffer ", phase="prefill"),
         cl_fault(0, "CL ERROR CODE : -58, info:clEvent ", phase="prefill")], None, {"mnn_version": "3.7.0"}),
    "mnn-3870-intel-arc-140v-out-of-resources": (
        {"os": "windows", "opencl": dev("Intel(R) Arc(TM) 140V GPU (16GB)", "Intel(R) Corporation")},
        [cl_fault(0, "CL ERROR CODE : -5, info:Convolution ", count=50), crash(1, "SIGSEGV", [])], None,
        {"opencl": dev("Intel(R) Iris(R) Xe Graphics", "Intel(R) Corporation")}),
    "mnnllm-98-glm-second-question-crash": (
        {"model": {"family": "chatglm", "params": 6.2e9}, "mnn_version": "2.6.0",
         "opencl": dev("NVIDIA GeForce RTX 3090", "NVIDIA Corporation")},
        [iteration(0), crash(1, "SIGABRT", ["Cannot access memory at address 0x7ffe2a3b4c5d"])], None,
        {"mnn_version": "2.8.0"}),
    "mnnllm-170-qwen-cl-errors-after-rounds": (
        {**ANDROID, "model": {"family": "qwen", "params": 1.84e9}, "mnn_version": "2.8.1"},
        [iteration(i, turn=i) for i in range(3)] + [cl_fault(3, "CL ERROR CODE : -36, info:run3d "),
                                                    iteration(3, turn=3)], None,
        {"model": {"family": "qwen", "params": 7e9}}),
    "mnn-3502-qwen2-1.5b-decode-crash": (
        {**ANDROID, "model": {"family": "qwen2", "params": 1.54e9}, "mnn_version": "3.1.3"},
        [crash(5, "SIGSEGV", [])], None, {"mnn_version": "3.1.4"}),
    "mnn-3372-qwen2.5vl-segv": (
        {"model": {"family": "qwen2_5_vl", "params": 3.75e9}, "mnn_version": "3.1.0"},
        [crash(0, "SIGSEGV", ["Segmentation fault (core dumped)"])], None, {"mnn_version": "3.2.0"}),
    "mnn-4498-mali-g720-prefill-page-fault": (
        {"model": {"family": "qwen3", "params": 6e8}, "mnn_version": "3.5.0",
         "opencl": dev("Mali-G720-Immortalis MC10", "ARM"),
         "config": {"engine_options": {"precision": "low", "memory": "low", "thread_num": 4}}},
        [iteration(i, turn=i) for i in range(4)] + [cl_fault(4, "CL ERROR CODE : -36, info:Raster ", phase="prefill"),
                                                    iteration(4, turn=4)],
        "[ 4242.123456] mali 15000000.gpu: Unhandled Page fault in AS1 at VA 0x0000007F12345000\n",
        {"config": {"engine_options": {"thread_num": 1}}}),
    "mnn-4046-clone-shared-kv-segv": (
        {**ANDROID, "mnn_version": "3.3.0"},
        [line_fault(3, "Warning: module need new clone, cloning now."), crash(3, "SIGSEGV", [])], None,
        {"mnn_version": "3.6.1"}),
    "mnn-4624-adreno740-attention-kvmeta-crash": (
        {**ANDROID, "model": {"family": "lfm2_audio", "params": 1.5e9}, "mnn_version": "3.5.0",
         "opencl": dev("QUALCOMM Adreno(TM) 740", "QUALCOMM")},
        [crash(0, "SIGSEGV", [], phase="prefill")], None, {"mnn_version": "3.6.1"}),
    "mnn-3308-deepseek7b-map-ptrcl-segv": (
        {"model": {"family": "qwen2", "params": 7.6e9}, "opencl": dev("QUALCOMM Adreno(TM) 740", "QUALCOMM")},
        [line_fault(-1, "load ../MNN/model7b/llm.mnn ... Map error ptrCL == nullptr ", phase="load"),
         crash(-1, "SIGSEGV", ["Segmentation fault (core dumped)"], phase="load")], None,
        {"model": {"family": "qwen2", "params": 1.5e9}}),
    "mnnllm-100-android-load-oom-kill": (
        {**ANDROID}, [crash(-1, "SIGKILL", [], phase="load")], None, {"os": "linux"}),
    "mnn-4782-memory-underreported-os-kill": (
        {**ANDROID, "mnn_version": "3.6.1"}, [crash(7, "SIGKILL", [])], None, {"mnn_version": "3.6.2"}),
    "mnn-4836-intel-irisxe-garbage": (
        {"os": "windows", "opencl": dev("Intel(R) Iris(R) Xe Graphics", "Intel(R) Corporation", "32.0.101.7088")},
        [bad(0, "garbage", "invalid_utf8")], None, {"os": "linux"}),
    "mnn-3560-dimensity8100-fp16-garbage": (
        {**ANDROID, "model": {"family": "qwen3", "params": 4e9}, "opencl": dev("Mali-G610 MC6", "ARM"),
         "config": {"engine_options": {"precision": "low"}}},
        [bad(2, "garbage")], None, {"config": {"engine_options": {"precision": "high"}}}),
    "mnn-3370-vl-exclamation-second-run": (
        {"model": {"family": "qwen2_vl", "params": 2.2e9}},
        [iteration(0), bad(1, "repetition"), iteration(1, output="!" * 40)], None,
        {"model": {"family": "qwen2", "params": 2.2e9}}),
    "mnn-4676-fastvlm-dual-opencl-repeat": (
        {"model": {"family": "fastvlm", "params": 1.5e9}}, [bad(0, "repetition")], None,
        {"model": {"family": "fastvlm", "params": 7e9}}),
    "mnn-4659-adreno830-setarg-49": (
        {**ANDROID, "mnn_version": "3.6.0", "opencl": dev("QUALCOMM Adreno(TM) 830", "QUALCOMM")},
        [cl_fault(0, "CL ERROR CODE : -49, info:setArg matmul_qk_div_mask ", phase="prefill"),
         cl_fault(0, "CL ERROR CODE : -52, info:matmul_qk_div_mask ", phase="prefill")], None,
        {"mnn_version": "3.6.1"}),
    "mnn-2315-intel-raster-buffer-14": (
        {"mnn_version": "2.4.0", "opencl": dev("Intel(R) UHD Graphics 770", "Intel(R) Corporation")},
        [cl_fault(0, "CL ERROR CODE : -14, info:raster_buffer ", phase="prefill"),
         line_fault(0, "lws tune res raster_buffer", phase="prefill")], None, {"mnn_version": "3.0.0"}),
    "mnn-3811-mali-g31-tuning-36-58": (
        {"opencl": dev("Mali-G31", "ARM")},
        [cl_fault(0, "CL ERROR CODE : -58, info:clEvent ", phase="load"),
         cl_fault(0, "CL ERROR CODE : -36, info:conv_2d_c8h2w116_32_3_3_1_1_1_1 ", phase="load")], None,
        {"opencl": dev("Mali-G710", "ARM")}),
    "mnn-1055-workgroup-size-54": (
        {"os": "macos", "mnn_version": "1.0.2", "opencl": dev("AMD Radeon Pro 580X Compute Engine", "AMD")},
        # MNN 1.0 format, without the "CL " prefix (soak.logparse does not know it; the classifier does)
        [("fault", {"iteration": 0, "kind": "error_line", "phase": "decode", "line": "ERROR CODE : -54"})],
        None, {"mnn_version": "3.0"}),
    "mnn-3399-stale-cache-crash-after-upgrade": (
        {**ANDROID, "mnn_version": "3.1.0"},
        [line_fault(-1, "Cache invalid, will be reset", phase="load"), crash(0, "SIGSEGV", [])], None,
        {"mnn_version": "2.8.4"}),
    "mnn-3233-kirin-libmnn-cl-crash": (
        {**ANDROID, "opencl": dev("Mali-G78", "ARM")},
        [crash(0, "SIGSEGV", ["#00 pc 00000000000a1b2c  /data/app/com.x/lib/arm64/libMNN_CL.so"])], None,
        {"os": "linux"}),
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _merge(base: dict, change: dict) -> dict:
    out = dict(base)
    for k, v in change.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _all_ids(result):
    return {m["id"] for d in result["findings"] for m in d["matches"]}, \
        {m["id"] for d in result["findings"] for m in d["near_misses"]}


@pytest.mark.parametrize("entry_id", sorted(WITNESSES))
def test_witness_matches_and_moved_context_is_near_miss(tmp_path, catalog, entry_id):
    changes, events, log, moved = WITNESSES[entry_id]
    manifest = _merge(ctx(), changes)
    manifest = {k: v for k, v in manifest.items() if v is not None}
    result = classify_run(make_run(tmp_path, "w", manifest, events, engine_log=log), catalog)
    matched, _ = _all_ids(result)
    assert entry_id in matched, [(d["signature_text"], [m["id"] for m in d["matches"]],
                                  [(n["id"], n["mismatch"]) for n in d["near_misses"]]) for d in result["findings"]]
    best = [d for d in result["findings"] if d["fault_id"] == entry_id]
    assert best, "matched but never the best known fault of a finding"
    moved_manifest = {k: v for k, v in _merge(manifest, moved).items() if v is not None}
    result = classify_run(make_run(tmp_path, "m", moved_manifest, events, engine_log=log), catalog)
    matched, near = _all_ids(result)
    assert entry_id not in matched and entry_id in near


def test_every_seeded_entry_has_a_witness(catalog):
    covered = set(WITNESSES) | {
        # witnessed in test_real_logs.py
        "mnn-2502-glm6b-queue-lost", "mnnllm-172-t4-embedding-image-40", "mnn-3726-qwen3-0.6b-9999-punctuation",
        "mnn-4236-d8300-no-platform", "mnn-3769-d9300-no-platform", "mnn-2391-adreno-libcb",
        "mnn-1751-build-cascade-45-48", "mnn-4802-omni-fp16-build-segv", "mnn-2613-9999-commandqueue",
        # witnessed on the oracle's findings in tests/oracle/test_oracle_diagnosis.py
        "mnn-4653-adreno830-setarg-49-inf-logits"}
    seeded = {e.id for e in catalog.entries if not e.id.startswith("soak-")}
    assert seeded == covered

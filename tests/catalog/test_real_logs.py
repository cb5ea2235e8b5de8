"""Classification of real MNN log excerpts (research notes §1.3 formats,
§3 reports, §5 signatures, §6 M1/M7/M8/M9), fed as events written by soak's
EventLog plus engine.log, with the run's context in manifest.json."""

from __future__ import annotations

import json

import pytest

from soak.catalog.classify import classify_run
from soak.catalog.loader import load_catalog

from _catalog_runs import cl_fault, crash, ctx, finding, ids, iteration, line_fault, make_run, near_ids


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


# alibaba/MNN#2502: ChatGLM-6B, RTX 3090, MNN 2.6.0; 2nd input floods -36.
GLM_TAGS = ["image_to_nchw_buffer", "nchw_buffer_to_image", "BinaryOp", "run3d", "While", "Raster"]
GLM_6B_3090 = ctx(model={"family": "chatglm", "params": 6_200_000_000},
                  opencl={"device": {"name": "NVIDIA GeForce RTX 3090", "vendor": "NVIDIA Corporation",
                                     "driver_version": "535.54"}},
                  mnn_version="2.6.0")


def _glm_events():
    ev = [iteration(0, turn=0)]
    for tag in GLM_TAGS:
        ev.append(cl_fault(1, f"CL ERROR CODE : -36, info:{tag} ", count=7))
    ev.append(iteration(1, turn=1, cl_errors=[{"code": -36}], failures=["cl_error"]))
    return ev


def test_r01_glm6b_queue_lost_matches_report_entry(tmp_path, catalog):
    run = make_run(tmp_path, "glm", GLM_6B_3090, _glm_events())
    result = classify_run(run, catalog)
    raster = finding(result, "cl_error", signature_text="cl_error/decode: CL_INVALID_COMMAND_QUEUE info:Raster")
    assert raster["fault_id"] == "mnn-2502-glm6b-queue-lost"
    assert "soak-dead-queue-flood" in ids(raster)  # 6 tags x 7 lines = 42 >= 10
    top = raster["matches"][0]
    assert any("CL code -36" in w for w in top["why"]) and any("info tag 'Raster'" in w for w in top["why"])
    assert not top["context_unknown"]
    assert any("model_params" in f for f in top["context_fits"])
    assert raster["first_iteration"] == raster["last_iteration"] == 1
    assert raster["count"] == 7
    assert json.loads((run / "classification.json").read_text())["findings"]


def test_r01_symptom_on_small_qwen_is_a_near_miss(tmp_path, catalog):
    run = make_run(tmp_path, "qwen", ctx(), _glm_events())
    result = classify_run(run, catalog)
    raster = finding(result, "cl_error", info=None) if False else [d for d in result["findings"] if "info:Raster" in d["signature_text"]][0]
    assert raster["fault_id"] == "soak-dead-queue-flood"
    assert "mnn-2502-glm6b-queue-lost" in near_ids(raster)
    miss = next(m for m in raster["near_misses"] if m["id"] == "mnn-2502-glm6b-queue-lost")
    text = " ".join(miss["mismatch"])
    assert "model_params is 494M" in text and "model_family" in text and "mnn_version is 3.6.1" in text


# wangzhaode/mnn-llm#172: qwen-1.8b-int4 on a T4; the 1.8B fault seen on 0.5B.
T4_LINES = ["Alloc Image 512 x 151936 error, code:-40 ", "onCopyBuffer float error !!!"]


@pytest.mark.parametrize("params,expect_match", [(1_840_000_000, True), (494_000_000, False)])
def test_r03_t4_image_limit_known_on_1_8b_near_miss_on_0_5b(tmp_path, catalog, params, expect_match):
    m = ctx(model={"family": "qwen", "params": params},
            opencl={"device": {"name": "Tesla T4", "vendor": "NVIDIA Corporation", "driver_version": "470.82"}},
            mnn_version="2.8.1")
    run = make_run(tmp_path, "t4", m, [line_fault(0, T4_LINES[0], phase="load")])
    d = finding(classify_run(run, catalog), "error_line")
    if expect_match:
        assert d["fault_id"] == "mnnllm-172-t4-embedding-image-40"
    else:
        assert d["fault_id"] == "soak-load-alloc-failure"
        miss = next(x for x in d["near_misses"] if x["id"] == "mnnllm-172-t4-embedding-image-40")
        assert miss["mismatch"] == ["model_params is 494M, entry wants 1.5B..2.2B"]


# alibaba/MNN#3726: Qwen3-0.6B, Windows, 4th round -9999 clEvent, then only 。/！
def _r18_events():
    ev = [iteration(i, turn=i) for i in range(3)]
    ev.append(cl_fault(3, "CL ERROR CODE : -9999, info:clEvent ", count=2))
    ev.append(iteration(3, turn=3, cl_errors=[{"code": -9999}], failures=["cl_error"]))
    for i in (4, 5):
        ev.append(("fault", {"iteration": i, "kind": "bad_output", "phase": "decode", "symptoms": ["repetition"]}))
        ev.append(iteration(i, turn=i, output="。" * 30, failures=["bad_output"]))
    return ev


def test_r18_qwen3_windows_9999(tmp_path, catalog):
    m = ctx(model={"family": "qwen3", "params": 600_000_000}, os="windows", opencl=None)
    result = classify_run(make_run(tmp_path, "r18", m, _r18_events()), catalog)
    cl = finding(result, "cl_error")
    assert cl["fault_id"] == "mnn-3726-qwen3-0.6b-9999-punctuation"
    assert "soak-nvidia-illegal-memory-access" in ids(cl)  # vendor unknown: matched, said so
    nv = next(x for x in cl["matches"] if x["id"] == "soak-nvidia-illegal-memory-access")
    assert nv["context_unknown"] == ["gpu_vendor"]
    bad = finding(result, "bad_output")
    assert bad["fault_id"] == "mnn-3726-qwen3-0.6b-9999-punctuation"
    assert bad["first_iteration"] == 4 and bad["last_iteration"] == 5 and bad["count"] == 2
    assert "soak-output-repetition" in ids(bad)


def test_r18_on_linux_is_near_miss_but_nvidia_entry_fits(tmp_path, catalog):
    m = ctx(model={"family": "qwen3", "params": 600_000_000})
    cl = finding(classify_run(make_run(tmp_path, "r18l", m, _r18_events()), catalog), "cl_error")
    assert cl["fault_id"] == "soak-nvidia-illegal-memory-access"
    assert "mnn-3726-qwen3-0.6b-9999-punctuation" in near_ids(cl)
    nv = cl["matches"][0]
    assert nv["context_unknown"] == [] and nv["context_fits"] == ["gpu_vendor 'NVIDIA Corporation'"]


# Research §6 M1: PoCL CPU device, OpenCL requested -> silent CPU fallback.
def test_m1_pocl_silent_cpu_fallback(tmp_path, catalog):
    m = ctx(backend_actual="cpu", opencl={"platform": "Portable Computing Language",
                                          "device": {"name": "pthread-skylake-avx512-AMD EPYC 7B13",
                                                     "vendor": "AuthenticAMD", "driver_version": "5.0+debian"}})
    ev = [line_fault(0, "Can't Find type=3 backend, use 0 instead", phase="load"), iteration(0)]
    d = finding(classify_run(make_run(tmp_path, "m1", m, ev), catalog), "cpu_fallback")
    assert d["fault_id"] in ("soak-cpu-fallback", "soak-pocl-cpu-device")
    assert {"soak-cpu-fallback", "soak-pocl-cpu-device"} <= set(ids(d))
    assert d["severity"] == "high"


def test_fallback_derived_from_manifest_when_no_log_line(tmp_path, catalog):
    # no fallback line at all (no GPU-type device is not logged, research §1.4)
    m = ctx(backend_actual="cpu")
    d = finding(classify_run(make_run(tmp_path, "fb", m, [iteration(0)]), catalog), "cpu_fallback")
    assert d["fault_id"] == "soak-cpu-fallback"


# alibaba/MNN#4236 / #2391: the line before the fallback names the cause.
def test_r29_no_platform_then_fallback_android(tmp_path, catalog):
    m = ctx(os="android", backend_actual="cpu", opencl=None)
    log = "CL ERROR CODE : -1001, info:getPlatform \nCan't Find type=3 backend, use 0 instead\n"
    ev = [cl_fault(0, "CL ERROR CODE : -1001, info:getPlatform ", phase="load"),
          line_fault(0, "Can't Find type=3 backend, use 0 instead", phase="load")]
    result = classify_run(make_run(tmp_path, "r29", m, ev, engine_log=log), catalog)
    cl = finding(result, "cl_error")
    assert {"mnn-4236-d8300-no-platform", "mnn-3769-d9300-no-platform"} <= set(ids(cl))
    fb = finding(result, "cpu_fallback")
    assert "mnn-4236-d8300-no-platform" in ids(fb)
    why = next(x for x in fb["matches"] if x["id"] == "mnn-4236-d8300-no-platform")["why"]
    assert any("engine.log" in w and "-1001" in w for w in why)


def test_r31_adreno_logcat_line(tmp_path, catalog):
    m = ctx(os="android", backend_actual="cpu", opencl=None)
    ev = [cl_fault(0, "I/MNNJNI: CL ERROR CODE : -30, info:getPlatform", phase="load")]
    d = finding(classify_run(make_run(tmp_path, "r31", m, ev), catalog), "cl_error")
    assert d["fault_id"] == "mnn-2391-adreno-libcb"
    assert d["cl_code"] == {"code": -30, "name": "CL_INVALID_VALUE"}


# Research §6 M8: every enqueue fails with -5; decode tok/s rises (1369 vs 554).
def test_m8_tps_rising_while_kernels_fail(tmp_path, catalog):
    ev = [iteration(i, decode_tps=554.0 + i) for i in range(6)]
    tags = ["Raster", "Convolution", "BinaryOp", "While", "run3d", "UnaryOp", "LayerNorm", "run2d"]
    for i in range(6, 12):
        for tag in tags:
            ev.append(cl_fault(i, f"CL ERROR CODE : -5, info:{tag} ", count=40))
        ev.append(iteration(i, decode_tps=1369.0 + i, cl_errors=[{"code": -5}]))
    result = classify_run(make_run(tmp_path, "m8", ctx(), ev), catalog)
    perf = finding(result, "perf_anomaly")
    assert perf["fault_id"] == "soak-kernels-failing-tps-up" and perf["severity"] == "critical"
    assert perf["figures"]["decode_tps_with_errors"] > 2 * perf["figures"]["decode_tps_clean"]
    assert (perf["first_iteration"], perf["last_iteration"]) == (6, 11)
    raster = [d for d in result["findings"] if "info:Raster" in d["signature_text"]][0]
    assert raster["fault_id"] == "soak-out-of-resources" and raster["count"] == 240
    assert result["faults"][0]["fault"] == "soak-kernels-failing-tps-up"


def test_clean_run_has_no_perf_anomaly(tmp_path, catalog):
    ev = [iteration(i, decode_tps=550.0 + (i % 3)) for i in range(30)]
    result = classify_run(make_run(tmp_path, "clean", ctx(), ev), catalog)
    assert result["findings"] == [] and result["summary"]["worst_severity"] is None


# Research §6 M9: one clCreateBuffer failing with -4, three endings.
def test_m9a_weight_map_then_segv(tmp_path, catalog):
    lines = ["load llm.mnn", "Map error dequantBufferMap == nullptr "]
    ev = [line_fault(-1, lines[1], phase="load"),
          crash(-1, "SIGSEGV", lines, phase="load", exit_code=-11)]
    result = classify_run(make_run(tmp_path, "m9a", ctx(), ev), catalog)
    assert finding(result, "error_line")["fault_id"] == "soak-load-alloc-failure"
    c = finding(result, "crash")
    assert c["fault_id"] == "soak-load-alloc-failure"
    assert "soak-crash" in ids(c) and c["severity"] == "critical"
    assert "SIGSEGV" in c["signature_text"] and "dequantBufferMap" in c["signature_text"]


def test_m9bc_alloc_then_no_outputs_and_sticky_state(tmp_path, catalog):
    ev = [line_fault(2, "Alloc Buffer 4194304 error, code:-4 ", phase="prefill"),
          line_fault(2, "[Error]: onForward returned no outputs. seqLen=37, inDecode=0, inputs=3, moduleKey=(0,0)",
                     phase="prefill"),
          ("fault", {"iteration": 2, "kind": "status_error", "phase": "prefill", "status": 4,
                     "status_name": "INTERNAL_ERROR"}),
          line_fault(3, "[Error]: LLM in error state. Status: 4", phase="prefill"),
          ("fault", {"iteration": 3, "kind": "status_error", "phase": "prefill", "status": 4,
                     "status_name": "INTERNAL_ERROR"})]
    result = classify_run(make_run(tmp_path, "m9c", ctx(), ev), catalog)
    alloc = [d for d in result["findings"] if "Alloc Buffer" in d["signature_text"]][0]
    assert alloc["fault_id"] == "soak-load-alloc-failure"
    assert "CL_MEM_OBJECT_ALLOCATION_FAILURE" in alloc["signature_text"]
    nout = [d for d in result["findings"] if "onForward" in d["signature_text"]][0]
    assert nout["fault_id"] == "soak-onforward-no-outputs"
    sticky = [d for d in result["findings"] if "error state" in d["signature_text"]][0]
    assert sticky["fault_id"] == "soak-sticky-error-state"
    status = finding(result, "status_error")
    assert status["fault_id"] == "soak-sticky-error-state" and status["count"] == 2
    assert (status["first_iteration"], status["last_iteration"]) == (2, 3)


# alibaba/MNN#1751: the build-failure cascade; MNN 1.x context.
R34_LINES = ["Invalid Cache", "Cache invalid, will be reset", "Build program failed, err:-11 ! ",
             "programName.c_str()=s buffer_to_image in buildKernel, 387 "]


@pytest.mark.parametrize("version,known", [("1.2.0", True), ("3.6.1", False)])
def test_r34_build_cascade(tmp_path, catalog, version, known):
    ev = [line_fault(0, x, phase="load") for x in R34_LINES[2:]]
    ev += [cl_fault(0, "CL ERROR CODE : -45, info:getKernel ", phase="load"),
           cl_fault(1, "CL ERROR CODE : -48, info:nchw_buffer_to_image "),
           cl_fault(1, "CL ERROR CODE : -48, info:Raster ", count=12)]
    result = classify_run(make_run(tmp_path, "r34", ctx(mnn_version=version), ev, engine_log="\n".join(R34_LINES)),
                          catalog)
    build = [d for d in result["findings"] if "Build program failed" in d["signature_text"]][0]
    assert build["fault_id"] == "soak-kernel-build-failure"
    assert "CL_BUILD_PROGRAM_FAILURE" in build["signature_text"]
    k45 = [d for d in result["findings"] if "CL_INVALID_PROGRAM_EXECUTABLE" in d["signature_text"]][0]
    if known:
        assert k45["fault_id"] == "mnn-1751-build-cascade-45-48"
    else:
        assert k45["fault_id"] == "soak-kernel-build-failure"
        assert "mnn-1751-build-cascade-45-48" in near_ids(k45)


# alibaba/MNN#4802: fp16 build failure -> nullptr kernel -> SIGSEGV, Omni-3B on Mali-G720.
def test_r24_omni_build_failure_segv(tmp_path, catalog):
    m = ctx(model={"family": "qwen2_5_omni", "params": 3_400_000_000},
            opencl={"device": {"name": "Mali-G720-Immortalis MC10", "vendor": "ARM", "driver_version": "v1.r48p0"}})
    last = ["Build program failed, err:-11 ! ",
            "programName.c_str()=s buffer_convert_buf in buildKernelWithCache, 652 "]
    ev = [line_fault(0, last[0], phase="load"), crash(0, "SIGSEGV", last, phase="load", exit_code=-11)]
    d = finding(classify_run(make_run(tmp_path, "r24", m, ev), catalog), "crash")
    assert d["fault_id"] == "mnn-4802-omni-fp16-build-segv"
    assert d["matches"][0]["remedy"]["fixed_in"].startswith("alibaba/MNN PR #4805")


# alibaba/MNN#2613: -9999 commandQueue, -36 on a conv kernel, -58 clEvent; MNN 2.7.1 Linux.
def test_r36_9999_commandqueue_cascade(tmp_path, catalog):
    ev = [cl_fault(0, "CL ERROR CODE : -9999, info:commandQueue ", phase="load"),
          cl_fault(0, "CL ERROR CODE : -36, info:conv_2d_c4h1w1256_1_1_1_1_1_1 ", phase="load"),
          cl_fault(0, "CL ERROR CODE : -58, info:clEvent ", phase="load")]
    result = classify_run(make_run(tmp_path, "r36", ctx(mnn_version="2.7.1"), ev), catalog)
    assert finding(result, "cl_error", phase="load", cl_code={"code": -9999, "name": "CL_NV_INVALID_MEM_ACCESS"})[
        "fault_id"] == "mnn-2613-9999-commandqueue"
    conv = [d for d in result["findings"] if "conv_Nd" in d["signature_text"]][0]
    assert conv["fault_id"] == "mnn-2613-9999-commandqueue"
    assert "mnn-3811-mali-g31-tuning-36-58" in near_ids(conv)  # same symptom, Mali-G31 context
    ev58 = [d for d in result["findings"] if "CL_INVALID_EVENT" in d["signature_text"]][0]
    assert ev58["fault_id"] == "soak-tuning-enqueue-failure"


# Research §1.3 / §5 signature 5: KV growth failure at a 64-token step.
def test_kv_cache_growth_failure(tmp_path, catalog):
    ev = [iteration(0, turn=0, context_tokens=60),
          line_fault(1, "Map error key_ptr == nullptr ", phase="decode"),
          iteration(1, turn=1, context_tokens=130, failures=["error_line"])]
    d = finding(classify_run(make_run(tmp_path, "kv", ctx(), ev), catalog), "error_line")
    assert d["fault_id"] == "soak-kv-cache-growth-failure"
    assert d["ranges"]["context_tokens"] == [130, 130] and d["ranges"]["turn"] == [1, 1]


# Research §6 M7: history grows past max_position_embeddings, turns slow down.
def test_m7_context_overflow_and_slowdown(tmp_path, catalog):
    m = ctx(model={"family": "qwen2", "params": 43_000_000, "max_position_embeddings": 2048})
    ev = []
    for i in range(40):
        c = 100 * i
        ev.append(iteration(i, turn=i, context_tokens=c, decode_tps=500 - 10 * i))
        if c > 1500:
            ev.append(("fault", {"iteration": i, "kind": "slowdown", "phase": "decode",
                                 "decode_tps": 500 - 10 * i, "baseline_tps": 500}))
    result = classify_run(make_run(tmp_path, "m7", m, ev), catalog)
    over = finding(result, "context_overflow")
    assert over["fault_id"] == "soak-context-overflow"
    assert over["first_iteration"] == 21 and over["figures"]["max_context_tokens_seen"] == 3900
    slow = finding(result, "slowdown")
    assert slow["fault_id"] == "soak-context-slowdown" and slow["count"] == 24


def test_host_memory_growth_from_memory_events(tmp_path, catalog):
    ev = []
    for i in range(100):
        ev.append(iteration(i))
        ev.append(("memory", {"source": "iteration", "iteration": i, "rss": 200_000_000 + i * 1_000_000,
                              "uss": 1, "pss": 1, "fds": 3, "threads": 2, "gpu_live_bytes": 50_000_000}))
    d = finding(classify_run(make_run(tmp_path, "leak", ctx(), ev), catalog), "memory_growth")
    assert d["fault_id"] == "soak-host-memory-leak" and d["signature_text"] == "memory_growth/?: host"
    assert d["figures"]["growth_bytes"] > 40_000_000


def test_memory_is_judged_from_the_events_not_a_recorded_verdicts_json(tmp_path, catalog):
    """A verdicts.json written by older code (or by hand) does not decide memory: the classifier
    judges the events with soak.analysis.memory_verdict, as the gate does (issue 22)."""
    ev = []
    for i in range(100):
        ev.append(iteration(i))
        ev.append(("memory", {"source": "iteration", "iteration": i, "rss": 200_000_000 + (i % 3) * 4096,
                              "gpu_live_bytes": 50_000_000 + i * 200_000}))
    run = make_run(tmp_path, "v", ctx(), ev)
    (run / "verdicts.json").write_text(json.dumps({"memory": {"series": {
        "rss": {"verdict": "leak", "growth_bytes": 9e6, "slope_per_iteration": {"value": 4096}},
        "gpu_live_bytes": {"verdict": "stable"}}}}))
    result = classify_run(run, catalog)
    (d,) = [x for x in result["findings"] if x["kind"] == "memory_growth"]
    assert d["fault_id"] == "soak-gpu-memory-leak" and d["figures"]["source"] == "memory verdict"
    assert (d["first_iteration"], d["last_iteration"]) == (10, 99)  # after the warm-up, in iterations


def test_thousand_identical_failures_are_one_finding(tmp_path, catalog):
    ev = []
    for i in range(5, 905):
        ev.append(cl_fault(i, "CL ERROR CODE : -36, info:Raster ", count=3))
        ev.append(iteration(i, turn=i % 4, failures=["cl_error"], cl_errors=[{"code": -36}]))
    result = classify_run(make_run(tmp_path, "many", ctx(), ev), catalog)
    assert len(result["findings"]) == 1
    d = result["findings"][0]
    assert (d["first_iteration"], d["last_iteration"], d["events"], d["count"]) == (5, 904, 900, 2700)
    assert d["iterations_affected"] == 900 and d["ranges"]["turn"] == [0, 3]


def test_raw_engine_log_without_events(tmp_path, catalog):
    """A bare `llm_demo` log (research §6 M8 and M1 lines) classifies too."""
    log = ("Can't Find type=3 backend, use 0 instead\n" + "CL ERROR CODE : -5, info:Raster \n" * 30
           + "CL ERROR CODE : -36, info:BinaryOp \n" * 12 + "prefill speed = 4.3 tok/s\n")
    run = make_run(tmp_path, "raw", None, None, engine_log=log)
    result = classify_run(run, catalog)
    assert result["source"] == "engine.log" and "no manifest.json" in result["context"]["manifest_problem"]
    assert set(result["context_unknown"]) >= {"model_params", "gpu_model", "mnn_version"}
    by_sig = {d["signature_text"]: d for d in result["findings"]}
    assert by_sig["cl_error/?: CL_OUT_OF_RESOURCES info:Raster"]["count"] == 30
    assert by_sig["cl_error/?: CL_INVALID_COMMAND_QUEUE info:BinaryOp"]["fault_id"] == "soak-dead-queue-flood"
    assert by_sig["cpu_fallback/?: Can't Find type=N backend, use N instead"]["fault_id"] == "soak-cpu-fallback"


def test_missing_manifest_fields_are_unknown_not_fatal(tmp_path, catalog):
    run = make_run(tmp_path, "bare", {"backend": "opencl"}, [cl_fault(0, "CL ERROR CODE : -9999, info:clEvent ")])
    result = classify_run(run, catalog)
    d = result["findings"][0]
    assert d["fault_id"] == "soak-nvidia-illegal-memory-access"
    assert "gpu_vendor" in d["matches"][0]["context_unknown"]
    assert "model_params" in result["context_unknown"]
    # a report entry needing unknown context ranks below one it fully fits
    assert [m["id"] for m in d["matches"]].index("mnn-4681-internvl-raster-clevent") > 0


def test_corrupt_manifest_and_truncated_events(tmp_path, catalog):
    run = make_run(tmp_path, "broken", None, [cl_fault(0, "CL ERROR CODE : -5, info:run3d ")])
    (run / "manifest.json").write_text("{not json")
    with open(run / "events.jsonl", "a") as fh:
        fh.write('{"event": "fault", "kind": "cl_error", "code": -3')  # killed mid-write
    result = classify_run(run, catalog)
    assert "unreadable" in result["context"]["manifest_problem"]
    assert len(result["findings"]) == 1 and result["findings"][0]["count"] == 1

"""Every fault kind of the test engine, end to end through the worker subprocess and ctypes."""

import pytest

from coresupport import faults, recoveries


def test_clean_run_has_no_faults(soak_run):
    result, events = soak_run(iterations=30)
    assert result.summary["faults"] == 0, faults(events)
    iters = [e for e in events if e["event"] == "iteration"]
    assert len(iters) == 30 and all(e["ok"] for e in iters)
    assert all(e["decode_tps"] for e in iters if e["generated_tokens"])
    assert result.summary["end_reason"] == "iterations"
    assert [e["event"] for e in events][:2] == ["run_start", "worker_start"]
    assert events[-1]["event"] == "run_end"
    assert (result.run_dir / "summary.json").exists() and (result.run_dir / "manifest.json").exists()


def test_cl_error_is_recorded_and_reset_recovers(soak_run):
    result, events = soak_run([{"kind": "cl_error", "at": [3], "code": -5, "info": "run3d", "repeat": 3}])
    (f,) = faults(events, "cl_error")
    assert (f["iteration"], f["code"], f["name"], f["info"], f["count"]) == (3, -5, "CL_OUT_OF_RESOURCES", "run3d", 3)
    it = next(e for e in events if e["event"] == "iteration" and e["i"] == 3)
    assert it["cl_errors"] == [{"code": -5, "name": "CL_OUT_OF_RESOURCES", "info": "run3d", "count": 3}]
    log = (result.run_dir / "engine.log").read_bytes()
    start, end = it["log_span"]
    assert log[start:end].count(b"CL ERROR CODE : -5, info:run3d") == 3
    assert recoveries(events)[3]["recovered_by"] == "reset"


def test_sticky_error_needs_reinit(soak_run):
    _, events = soak_run([{"kind": "sticky_error", "at": [5]}])
    assert faults(events, "status_error", 5)[0]["status_name"] == "INTERNAL_ERROR"
    rec = recoveries(events)[5]
    assert [s["step"] for s in rec["steps"]] == ["reset", "reinit"]
    assert rec["steps"][0]["ok"] is False and rec["recovered_by"] == "reinit"


def test_kv_map_error_line_is_parsed(soak_run):
    _, events = soak_run([{"kind": "kv_map_error", "at": [2]}])
    patterns = {f["pattern"] for f in faults(events, "error_line", 2)}
    assert {"kv_map_error", "no_outputs"} <= patterns


@pytest.mark.parametrize("sig,name", [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
def test_crash_is_isolated_and_worker_restarts(soak_run, sig, name):
    result, events = soak_run([{"kind": "crash", "at": [4], "signal": sig}], iterations=12)
    (f,) = faults(events, "crash")
    assert f["signal"] == name and f["iteration"] == 4
    exits = [e for e in events if e["event"] == "worker_exit" and e["reason"] == "crash"]
    assert exits and exits[0]["signal"] == name and exits[0]["pid"]
    assert recoveries(events)[4]["recovered_by"] == "restart"
    assert result.summary["iterations"] == 12 and result.summary["worker_restarts"] == 1
    starts = [e for e in events if e["event"] == "worker_start"]
    assert len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"]


def test_hang_is_killed_by_the_watchdog(soak_run):
    result, events = soak_run([{"kind": "hang", "at": [3], "seconds": 600}], iterations=8)
    (f,) = faults(events, "hang")
    assert f["timeout_s"] == 3 and f["iteration"] == 3
    exit_ev = next(e for e in events if e["event"] == "worker_exit" and e["reason"] == "hang")
    assert exit_ev["signal"] == "SIGKILL"
    assert recoveries(events)[3]["recovered_by"] == "restart"
    assert result.summary["iterations"] == 8


def test_hang_in_reset_phase(soak_run):
    _, events = soak_run([{"kind": "hang", "phase": "reset", "at": [4], "seconds": 600}], iterations=15,
                         max_turns=1)
    hangs = faults(events, "hang")
    assert hangs and hangs[0]["phase"] == "reset"


@pytest.mark.parametrize("kind,symptom", [("garbage", "garbage"), ("repeat", "repetition"),
                                          ("invalid_utf8", "invalid_utf8"), ("empty", "empty")])
def test_bad_output_is_detected(soak_run, kind, symptom):
    window = list(range(2, 12))
    _, events = soak_run([{"kind": kind, "at": window}], recover_on_output=True, max_new_tokens=48)
    judged = [e for e in events if e["event"] == "iteration" and e["i"] in window
              and e["max_new_tokens"] >= 16 and e["status_name"] in ("NORMAL_FINISHED", "MAX_TOKENS_FINISHED")]
    assert judged, "the seeded workload gave no iteration long enough to judge"
    flagged = {f["iteration"]: f for f in faults(events, "bad_output")}
    for e in judged:
        assert symptom in flagged[e["i"]]["symptoms"], e
        assert recoveries(events)[e["i"]]["recovered_by"] == "reset"
    assert set(flagged) <= set(window)


def test_bad_output_without_recovery_by_default(soak_run):
    _, events = soak_run([{"kind": "garbage", "at": [2]}])
    assert faults(events, "bad_output") and not recoveries(events)


def test_slowdown_is_flagged(soak_run):
    window = set(range(15, 19))
    _, events = soak_run([{"kind": "slow", "from": 15, "until": 18, "factor": 50}], iterations=22,
                         test_engine={"decode_tok_per_s": 4000, "stop_probability": 0.0}, max_new_tokens=32)
    flagged = {f["iteration"] for f in faults(events, "slowdown")}
    judged = {e["i"] for e in events if e["event"] == "iteration" and e["i"] in window
              and e["generated_tokens"] >= 4}  # 4 tokens x 50 / 4000 tok/s = 50 ms: measurable
    assert judged and flagged == judged


def test_cpu_fallback_marks_the_run_as_not_opencl(soak_run):
    result, events = soak_run([{"kind": "cpu_fallback"}], backend="opencl", iterations=5)
    assert faults(events, "cpu_fallback")[0]["phase"] == "load"
    load = next(e for e in events if e["event"] == "load")
    assert (load["backend_requested"], load["backend_actual"]) == ("opencl", "cpu")
    assert result.summary["backend_actual"] == "cpu"


def test_host_leak_shows_in_rss(soak_run):
    _, events = soak_run([{"kind": "leak", "from": 0, "bytes": 2 * 1024 * 1024}], iterations=40)
    rss = [e["rss"] for e in events if e["event"] == "memory" and e["source"] == "iteration" and e["iteration"] is not None]
    assert rss[-1] - rss[0] > 50 * 1024 * 1024  # ~78 MiB leaked
    timers = [e for e in events if e["event"] == "memory" and e["source"] == "timer"]
    assert all({"rss", "uss", "pss", "fds", "threads"} <= set(e) for e in timers)


def test_load_failure_ends_run_as_unrecoverable(soak_run):
    result, events = soak_run([{"kind": "fail_load"}], iterations=5)
    assert result.summary["end_reason"] == "unrecoverable" and result.exit_code == 1
    assert any(e["event"] == "load" and not e["ok"] for e in events)


def test_fail_fast_stops_at_first_failure(soak_run):
    result, events = soak_run([{"kind": "cl_error", "at": [3]}], iterations=20, fail_fast=True)
    assert result.summary["end_reason"] == "fail_fast" and result.exit_code == 1
    assert max(e["i"] for e in events if e["event"] == "iteration") == 3


def test_unrecoverable_engine_ends_the_run(soak_run):
    # a crash, and from then on every load crashes too: recoveries fail, the run ends
    result, events = soak_run([{"kind": "crash", "at": [2]}, {"kind": "crash", "phase": "load", "from": 3}],
                              iterations=50)
    assert result.summary["end_reason"] == "unrecoverable" and result.exit_code == 1
    assert result.summary["iterations"] == 3
    assert result.summary["recovery"]["unrecovered"] >= 1
    assert any(f["phase"] == "load" for f in faults(events, "crash"))


def test_reset_ladder_can_be_configured(soak_run):
    _, events = soak_run([{"kind": "sticky_error", "at": [2]}], ladder=["reload"])
    rec = recoveries(events)[2]
    assert [s["step"] for s in rec["steps"]] == ["reload"] and rec["recovered_by"] == "reload"


def test_probability_faults_are_seeded(soak_run):
    plan = [{"kind": "cl_error", "probability": 0.3, "from": 0}]
    _, a = soak_run(plan, iterations=25, seed=7)
    _, b = soak_run(plan, iterations=25, seed=7)
    assert [f["iteration"] for f in faults(a)] == [f["iteration"] for f in faults(b)]
    assert 0 < len(faults(a)) < 25


def test_fail_fast_stops_on_a_silent_cpu_fallback(soak_run):
    result, events = soak_run([{"kind": "cpu_fallback"}], backend="opencl", iterations=5, fail_fast=True)
    assert result.summary["end_reason"] == "fail_fast" and result.exit_code == 1
    assert not [e for e in events if e["event"] == "iteration"]


def test_an_os_oom_kill_is_its_own_kind_and_finds_the_oom_entries(soak_run):
    from soak.catalog.classify import classify_run

    result, events = soak_run([{"kind": "oom_kill", "at": [3], "bytes": 8 << 20}], iterations=6)
    (f,) = faults(events, iteration=3)
    assert (f["kind"], f["signal"], f["phase"]) == ("oom_kill", "SIGKILL", "decode")
    assert recoveries(events)[3]["recovered_by"] == "restart"
    (finding,) = [x for x in classify_run(result.run_dir, write=False)["findings"] if x["kind"] == "oom_kill"]
    # catalog entries written for `kind: crash, signal: SIGKILL` still match the refinement
    assert finding["fault_id"] == "soak-oom-kill" and finding["severity"] == "critical"

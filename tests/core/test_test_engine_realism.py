"""The test engine fails the way real MNN was measured to fail (research notes, section 6
"Measured on real MNN"; issue 11), and its fault plan is honest (issue 13, item 8)."""

from coresupport import faults


def _iters(events):
    return {e["i"]: e for e in events if e["event"] == "iteration"}


def test_failed_allocation_at_load_goes_on_and_cascades(soak_run):
    # MNN on NVIDIA: the weight upload fails (-4), load still succeeds, every later call
    # runs on the null buffer: -9999 lines with many op tags, KV Map error, garbage, normal status
    result, events = soak_run([{"kind": "alloc_fail", "code": -4}], iterations=3)
    log = (result.run_dir / "engine.log").read_text()
    assert log.splitlines()[0] == "Alloc Buffer 4194304 error, code:-4 "  # the root cause comes first
    (alloc,) = faults(events, "error_line", 0)[:1]
    assert (alloc["phase"], alloc["code"], alloc["offset"]) == ("load", -4, 0)
    it = _iters(events)[0]
    assert it["status_name"] in ("NORMAL_FINISHED", "MAX_TOKENS_FINISHED")  # no error status
    assert {e["code"] for e in it["cl_errors"]} == {-9999}
    assert len({e["info"] for e in it["cl_errors"]}) >= 4  # one tag per op
    assert "Map error key_ptr == nullptr" in it["error_lines"]
    assert it["checks"]["garbled"]
    assert it["log_span"][0] > alloc["offset"]  # the cascade is after the cause in the log


def test_error_storm_prints_one_line_per_info_tag(soak_run):
    tags = ["Raster", "ConvBuf", "BinaryOp", "While", "run3d", "UnaryOp", "LayerNorm", "run2d"]
    result, events = soak_run([{"kind": "cl_error", "from": 2, "until": 3, "code": -5, "info": tags,
                                "repeat": 2}], iterations=5)
    it = _iters(events)
    assert [(e["info"], e["count"]) for e in it[2]["cl_errors"]] == [(t, 2) for t in tags]
    assert [e["info"] for e in it[3]["cl_errors"]] == tags
    assert not it[4]["cl_errors"]


def _cl_iterations(events, info):
    return {e["iteration"] for e in faults(events, "cl_error") if e["info"] == info}


def test_probability_draws_do_not_replay_after_a_restart(soak_run):
    # the draw of iteration i is the same whether or not the worker restarted before it
    coin = {"kind": "cl_error", "probability": 0.5, "code": -5, "info": "coin"}
    _, calm = soak_run([coin], iterations=30, seed=3)
    _, crashed = soak_run([coin, {"kind": "crash", "at": [4, 9]}], iterations=30, seed=3)
    assert {e["iteration"] for e in faults(crashed, "crash")} == {4, 9}
    after = set(range(10, 30))
    fired = _cl_iterations(calm, "coin")
    assert fired & after == _cl_iterations(crashed, "coin") & after
    assert 5 <= len(fired) <= 25


def test_crash_probability_is_a_rate_not_a_replay(soak_run):
    # p = 0.5 crashes used to fire 15/60, 60/60, 15/60 for seeds 0/1/2: every restart re-seeded
    for seed in (0, 1, 2):
        _, events = soak_run([{"kind": "crash", "probability": 0.5}], iterations=24, seed=seed)
        crashes = {e["iteration"] for e in faults(events, "crash")}
        assert 4 <= len(crashes) <= 20, (seed, sorted(crashes))


def test_at_lists_are_not_cut(soak_run):
    at = list(range(1000, 1040)) + [3]  # iteration 3 is the 41st entry
    _, events = soak_run([{"kind": "cl_error", "at": at, "code": -5, "info": "late"}], iterations=5)
    assert _cl_iterations(events, "late") == {3}

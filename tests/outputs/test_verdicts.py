"""Memory, recovery and performance verdicts on synthetic run folders."""

from __future__ import annotations

import json

import pytest

from soak.analysis.verdicts import compute_verdicts
from soak.errors import BadInput

MIB = 1 << 20


def test_clean_run_is_stable(make_run):
    v = compute_verdicts(make_run(iterations=150))
    for name in ("rss", "uss", "pss"):
        assert v["memory"]["series"][name]["verdict"] == "stable"
    assert v["memory"]["series"]["gpu_live_bytes"]["verdict"] == "no_data"
    assert v["overall"]["leak"] is False
    assert v["recovery"]["score"] is None and v["recovery"]["rate"] is None


def test_leak_slope_with_interval_per_iteration_and_hour(make_run):
    run = make_run(iterations=200, seconds_per_iteration=3.0,
                   rss=lambda i, r: 500 * MIB + i * 200_000 + r.gauss(0, 1 * MIB))
    v = compute_verdicts(run)
    rss = v["memory"]["series"]["rss"]
    assert rss["verdict"] == "leak"
    s = rss["slope_per_iteration"]
    assert s["lo"] < 200_000 < s["hi"] and s["value"] == pytest.approx(200_000, rel=0.1)
    h = rss["slope_per_hour"]  # 1200 iterations an hour
    assert h["lo"] < 200_000 * 1200 < h["hi"]
    assert rss["warmup_excluded"] >= 20  # 10% of 200 iterations (+ the load sample)
    assert v["overall"]["leaking_series"] == ["pss", "rss", "uss"]
    # verdicts.json is strict JSON
    data = json.loads((run / "verdicts.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["memory"]["series"]["rss"]["verdict"] == "leak"


def test_warmup_growth_alone_is_not_a_leak(make_run):
    run = make_run(iterations=200, rss=lambda i, r: 500 * MIB + min(i, 15) * 8 * MIB + r.gauss(0, MIB))
    assert compute_verdicts(run)["memory"]["series"]["rss"]["verdict"] == "stable"


def test_gpu_live_bytes_series(make_run):
    run = make_run(iterations=120, gpu=lambda i, r: 64 * MIB + i * 256 * 1024)
    g = compute_verdicts(run)["memory"]["series"]["gpu_live_bytes"]
    assert g["verdict"] == "leak" and g["slope_per_iteration"]["value"] == pytest.approx(256 * 1024)


def test_memory_comes_back_after_restart_but_not_after_reset(make_run):
    # a leak that a worker restart clears (segments) and a plain reset does not
    state = {"base": 0}

    def rss(i, r):
        if i == 61:
            state["base"] = i  # restart at 60 gives memory back
        return 400 * MIB + (i - state["base"]) * 1 * MIB

    run = make_run(iterations=120, rss=rss, faults={50: "cl_error", 60: "crash"},
                   recover={50: ("reset", ["reset"]), 60: ("restart", ["reset", "reinit", "reload", "restart"])})
    v = compute_verdicts(run)
    after = {a["iteration"]: a for a in v["memory"]["after_recovery"]}
    assert after[50]["series"]["rss"]["returned"] is False
    assert after[60]["series"]["rss"]["returned"] is True
    assert after[60]["series"]["rss"]["given_back"] > 50 * MIB
    assert v["memory"]["returned_after_recovery"] is False
    assert v["memory"]["series"]["rss"]["verdict"] == "leak"  # grows again after the restart


def test_recovery_per_kind_and_score(make_run):
    run = make_run(iterations=60, faults={10: "cl_error", 20: "cl_error", 30: "error_line", 40: "crash"},
                   recover={10: ("reset", ["reset"]), 20: ("reinit", ["reset", "reinit"]),
                            30: ("reload", ["reset", "reinit", "reload"]),
                            40: (None, ["reset", "reinit", "reload", "restart"])})
    rec = compute_verdicts(run)["recovery"]
    assert rec["attempts"] == 4 and rec["recovered"] == 3 and rec["rate"] == 0.75
    assert rec["per_kind"]["cl_error"]["by_step"] == {"reset": 1, "reinit": 1}
    assert rec["per_kind"]["crash"]["rate"] == 0
    assert rec["per_kind"]["error_line"]["duration_s_median"] == pytest.approx(0.3)
    assert rec["score"] == pytest.approx(100 * (1 + 0.5 + 0.25 + 0) / 4, abs=0.1)


def test_throttling_drift_and_baseline_regression(make_run):
    base = make_run("base", iterations=120, tps=lambda i, r: 20 + r.gauss(0, 0.3))
    slow = make_run("slow", iterations=120, tps=lambda i, r: 20 - i * 0.05 + r.gauss(0, 0.3))
    v = compute_verdicts(slow, baseline=base)
    d = v["perf"]["drift"]["decode_tps"]
    assert d["verdict"] == "degrading" and d["drift_pct"] < -20
    assert v["perf"]["drift"]["latency_s"]["verdict"] == "degrading"
    assert v["overall"]["tps_regression_pct"] > 10
    same = compute_verdicts(base, baseline=base)
    assert abs(same["overall"]["tps_regression_pct"]) < 1e-9
    assert same["perf"]["drift"]["decode_tps"]["verdict"] == "stable"


def test_not_a_run_folder(tmp_path):
    with pytest.raises(BadInput):
        compute_verdicts(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput):
        compute_verdicts(tmp_path / "empty")


def test_truncated_last_line_is_tolerated(make_run):
    run = make_run(iterations=40)
    with (run / "events.jsonl").open("a") as fh:
        fh.write('{"event": "memory", "rss": 12')
    assert compute_verdicts(run)["iterations"] == 40

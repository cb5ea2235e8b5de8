"""The oracle verdict's reducer and drift rule (soak.analysis.oracle_verdict), without an engine: the
tally of a split pass equals the tally of one pass, what it keeps is bounded, and the drift verdict
tells corruption building up from float noise."""

from __future__ import annotations

import math
import random

import pytest

from soak.analysis import oracle_verdict as ov
from soak.analysis.loaded_run import RunFolder
from soak.events import EventLog


def turn(i, kl_mean, wrong=False, nonfinite=0, turn_index=0, steps=20):
    return {"event": "oracle_turn", "i": i, "conversation": i, "turn": turn_index, "steps": steps,
            "flips": 3 if wrong else 0, "nonfinite_steps": nonfinite, "first_nonfinite": 1 if nonfinite else None,
            "first_over": 0 if wrong else None, "kl_mean": None if nonfinite else kl_mean,
            "kl_max": None if nonfinite else 3 * kl_mean, "abs_max": None if nonfinite else 10 * kl_mean,
            "wrong": bool(wrong or nonfinite)}


def stream(n=500, seed=4):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        bad = rnd.random() < 0.1
        out.append(turn(i, 2.0 if bad else 1e-15 * (1 + rnd.random()), wrong=bad and i % 7,
                        nonfinite=int(bad and not i % 7), turn_index=i % 3))
    return out


def tally(events, cap=64):
    t = ov.OracleTally(cap)
    for e in events:
        t.add(e)
    return t


def test_a_split_pass_merges_to_the_tally_of_one_pass():
    events = stream()
    one = tally(events)
    a, b = tally(events[:217]), tally(events[217:])
    a.merge(b)
    for k in ("checked", "wrong", "nonfinite", "steps", "turn0_checked", "turn0_wrong", "first_wrong",
              "first_nonfinite"):
        assert getattr(a, k) == getattr(one, k), k
    assert a.wrong_turns == one.wrong_turns
    assert sorted(a.kl_max.items) == sorted(one.kl_max.items)        # under the reservoir's cap: every value
    assert a.kl_series.count == one.kl_series.count == len([e for e in events if not e["nonfinite_steps"]])
    assert len(a.kl_series.items) <= 64 and a.kl_series.items[0][0] == 0


def test_what_the_tally_keeps_is_bounded_and_it_counts_everything():
    events = [turn(i, 1.0, wrong=True) for i in range(3 * ov.WRONG_KEEP)]
    t = tally(events, cap=100)
    assert t.wrong == 3 * ov.WRONG_KEEP and len(t.wrong_turns) == ov.WRONG_KEEP
    assert len(t.kl_series.items) <= 100 and t.kl_series.count == 3 * ov.WRONG_KEEP
    assert [w["i"] for w in t.wrong_turns] == list(range(ov.WRONG_KEEP))   # the first ones


def test_a_turn_with_no_step_is_counted_but_measures_nothing():
    t = tally([turn(0, 0.0, steps=0)])
    assert t.checked == 1 and not t.kl_max.items and not t.kl_series.items


@pytest.mark.parametrize("seed", range(6))
def test_float_noise_and_a_steady_gpu_difference_are_stable(seed):
    rnd = random.Random(seed)
    noise = [(i, 1e-15 * math.exp(rnd.gauss(0, 0.5))) for i in range(300)]
    assert ov.kl_drift(noise, 1e-6)["verdict"] == "stable"
    gpu = [(i, 0.0025 * math.exp(rnd.gauss(0, 0.6))) for i in range(300)]   # healthy fp16 vs fp32, research notes
    assert ov.kl_drift(gpu, 0.05)["verdict"] == "stable"


def test_a_kl_that_builds_up_is_growing_and_too_few_turns_are_not_judged():
    rnd = random.Random(1)
    grow = [(i, 1e-5 * (1 + 0.2 * i) ** 2 * math.exp(rnd.gauss(0, 0.3))) for i in range(60)]
    d = ov.kl_drift(grow, 0.05)
    assert d["verdict"] == "growing" and d["end"] > d["start"] and d["growth"] >= d["material"] == 0.0005
    tiny = [(i, 1e-12 * (1 + 0.2 * i) ** 2) for i in range(60)]         # grows, but far below anything material
    assert ov.kl_drift(tiny, 0.05)["verdict"] == "stable"
    assert ov.kl_drift(grow[:5], 0.05)["verdict"] == "insufficient"


def test_the_run_folder_folds_oracle_turns_in_its_one_pass(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    log = EventLog(run / "events.jsonl", run_id="r")
    log.emit("run_start", seed=1, engine="test", backend="cpu")
    for e in stream(40):
        log.emit("oracle_turn", **{k: v for k, v in e.items() if k != "event"})
    log.emit("run_end", reason="iterations", iterations=40, elapsed_s=1.0)
    log.close()
    folder = RunFolder(run)
    assert folder.oracle_tally.checked == 40 and folder.events_seen == 42
    assert "oracle_turn" in folder.event_kinds and not [e for e in folder.notable if e["event"] == "oracle_turn"]
    with pytest.raises(ValueError):
        folder.of("oracle_turn")
    v = ov.oracle_verdict(folder)
    assert v["checked"] == 40 and v["reference"] is None     # no manifest: checked turns still judged
    assert len(v["series"]) == folder.oracle_tally.kl_series.count


def test_the_written_series_is_thinned_for_the_chart():
    t = tally([turn(i, 1e-3) for i in range(5000)], cap=8192)

    class Run:
        oracle_tally, manifest = t, {}
    v = ov.oracle_verdict(Run())
    assert ov.SERIES_OUT // 2 <= len(v["series"]) <= ov.SERIES_OUT and v["series"][0][0] == 0

"""Turn summaries and the judge: what makes a checked turn wrong."""

from __future__ import annotations

import math

from soak.oracle.judge import THRESHOLDS, comparison_class, judge_turn
from soak.oracle.native import StepMetrics
from soak.oracle.turn import TurnCheck


def step(kl=0.0, abs_=0.0, agree=True, nonfinite=0, rank=0, lp=-1.0):
    return StepMetrics(argmax=1, agree=agree, ref_rank=rank, nonfinite=nonfinite, kl=kl, nmse=abs_ / 10,
                       max_abs=abs_, ref_logprob=lp, margin=0.1)


def summarise(steps, limits=(THRESHOLDS["cross"].abs_max, THRESHOLDS["cross"].kl_max)):
    tc = TurnCheck(limits)
    for s in steps:
        tc.add(s)
    return tc.summary()


def test_a_healthy_cross_backend_turn_with_near_tie_flips_is_clean():
    s = summarise([step(0.002, 0.3), step(0.001, 0.2, agree=False, rank=1), step(0.003, 0.35)])
    assert s["flips"] == 1 and s["first_flip"] == 1 and s["first_over"] is None
    assert judge_turn(s, THRESHOLDS["cross"]) == []


def test_one_bad_step_makes_the_turn_wrong_and_names_it():
    s = summarise([step(0.002, 0.3)] * 5 + [step(0.01, 2.9)] + [step(0.002, 0.3)] * 3)
    [fault] = judge_turn(s, THRESHOLDS["cross"])
    assert fault["kind"] == "wrong_output" and fault["over"] == ["abs"]
    assert fault["first_step"] == 5 and fault["worst_step"] == 5 and fault["of_steps"] == 9


def test_kl_alone_also_counts_and_self_comparisons_are_strict():
    s = summarise([step(0.2, 0.5)])
    assert judge_turn(s, THRESHOLDS["cross"])[0]["over"] == ["kl"]
    tiny = summarise([step(1e-5, 0.01)], limits=None)
    assert judge_turn(tiny, THRESHOLDS["cross"]) == []
    assert judge_turn(tiny, THRESHOLDS["self"])[0]["over"] == ["abs", "kl"]


def test_nonfinite_logits_are_their_own_fault_not_also_wrong():
    s = summarise([step(0.001, 0.1), step(math.inf, math.inf, nonfinite=3, lp=-math.inf), step(0.001, 0.1)])
    assert s["nonfinite_steps"] == 1 and s["first_nonfinite"] == 1
    assert s["kl_max"] is None and s["nll"] is None          # JSON-safe
    [fault] = judge_turn(s, THRESHOLDS["cross"])
    assert fault == {"kind": "nonfinite_logits", "first_step": 1, "steps": 1, "of_steps": 3}


def test_comparison_class():
    oracle = {"engine": "mnn", "backend": "cpu", "precision": "high"}
    assert comparison_class(dict(oracle), oracle) == "self"
    assert comparison_class(dict(oracle, backend="opencl"), oracle) == "cross"
    assert comparison_class(dict(oracle, precision="low"), oracle) == "cross"

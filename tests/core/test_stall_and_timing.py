"""A streaming respond is watched for progress: a decode stuck mid-stream is a hang within
seconds, a slow but steady engine is not, and every iteration carries per-token timing."""

from coresupport import faults
from soak.loop.session import Timeouts

FAST = {"decode_tok_per_s": 20000, "prefill_tok_per_s": 200000, "stop_probability": 0}


def _iters(events):
    return {e["i"]: e for e in events if e["event"] == "iteration"}


def test_stuck_decode_is_caught_by_the_stall_timer_not_the_call_timeout(soak_run):
    plan = [{"kind": "hang", "at": [3], "after_tokens": 3, "seconds": 600}]
    result, events = soak_run(plan, iterations=6, test_engine=FAST,
                              timeouts=Timeouts(start=30, load=30, respond=120, reset=10, stall=2.0))
    (hang,) = faults(events, "hang")
    assert hang["iteration"] == 3 and hang["stalled"] is True
    assert hang["tokens_before"] >= 1  # it had been streaming
    assert hang["elapsed_s"] <= 5.0  # not the 120 s whole-call timeout
    assert result.summary["iterations"] == 6


def test_slow_but_alive_engine_is_not_killed(soak_run):
    # 1 token per second for 4 tokens, with a 2 s stall timer: progress keeps it alive
    engine = {**FAST, "prefill_tok_per_s": 1e9}
    plan = [{"kind": "slow", "at": [2], "factor": 20000}]
    script = [{"conversation": 0, "turn": t, "prompt": f"turn {t}", "max_new_tokens": 4} for t in range(3)]
    _, events = soak_run(plan, iterations=3, test_engine=engine, script=script,
                         timeouts=Timeouts(start=30, load=30, respond=120, reset=10, stall=2.0))
    assert not faults(events, "hang")
    slow = _iters(events)[2]
    assert slow["generated_tokens"] == 4 and slow["wall_s"] > 2.5
    assert 0.8 <= slow["itl_p50_s"] <= 1.5 and slow["itl_max_s"] >= slow["itl_p50_s"]


def test_iterations_carry_token_timing(soak_run):
    script = [{"conversation": 0, "turn": t, "prompt": f"turn {t}", "max_new_tokens": 8} for t in range(5)]
    result, events = soak_run(iterations=5, test_engine={"decode_tok_per_s": 500, "prefill_tok_per_s": 20000,
                                                         "stop_probability": 0}, script=script)
    for it in _iters(events).values():
        assert 0 < it["ttft_s"] < it["wall_s"]
        assert 0 < it["itl_p50_s"] <= it["itl_p99_s"] <= it["itl_max_s"]
        assert 0.001 <= it["itl_p50_s"] <= 0.05  # 500 tok/s: 2 ms apart
    timing = result.summary["token_timing"]
    assert timing["ttft_s"]["max"] == max(it["ttft_s"] for it in _iters(events).values())
    assert 0 < timing["itl_p50_s"]["mean"] <= timing["itl_max_s"]["max"]

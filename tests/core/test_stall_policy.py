"""The stall timer leaves a cold engine alone: on the first call after a load, and before any
call has finished with measured inter-token gaps, only the whole-call timeout applies.  Real
MNN 3.6.1 on PoCL builds its decode kernels between the first and the second token (20-300 s);
a 3 s timer there killed every call of a cold run as a hang (tests/mnn_native)."""

from soak.worker.supervisor import StallPolicy


def test_no_gap_timer_until_a_call_has_shown_its_rhythm():
    p = StallPolicy(stall_s=3.0)
    assert p.gap_s(0.05, first_after_load=False) is None  # nothing measured yet
    p.observe(True, 100, {"ttft_us": 2_000_000, "itl_max_us": 40_000})
    assert p.gap_s(0.05, first_after_load=True) is None   # a fresh load: kernels may build again
    assert p.gap_s(0.05, first_after_load=False) == 3.0   # warm: the 3 s floor
    assert p.gap_s(1.0, first_after_load=False) == 4.0    # a slow but steady call: 4x its gap


def test_stall_timer_off():
    p = StallPolicy(stall_s=None)
    p.observe(False, 100, {"ttft_us": 1000, "itl_max_us": 1000})
    assert p.gap_s(0.1, first_after_load=False) is None

"""The trend test on synthetic series: noise, AR(1), sawtooth, steps, ramps."""

from __future__ import annotations

import math
import random
from statistics import median

import pytest

from soak.analysis.memory_verdict import LeakCriteria, decide
from soak.analysis.trend import normal_cdf, normal_ppf, reduce_points, trend

MIB = 1 << 20


def ar1(n, phi, sd, rnd):
    y = [0.0]
    for _ in range(n - 1):
        y.append(phi * y[-1] + rnd.gauss(0, sd))
    return y


def verdict(y, c=LeakCriteria()):
    x = list(range(len(y)))
    t = trend(x, y, confidence=c.confidence)
    return decide(t, t.slope * (len(y) - 1), y[0], x, y, [0] * len(y), c)


def test_theil_sen_is_the_median_pairwise_slope():
    rnd = random.Random(1)
    x = list(range(60))
    y = [3.0 * i + rnd.gauss(0, 10) for i in x]
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(60) for j in range(i + 1, 60)]
    t = trend(x, y)
    assert t.slope == pytest.approx(median(slopes))
    assert t.slope_lo < 3.0 < t.slope_hi
    assert t.increasing and t.p < 1e-6


def test_normal_quantiles():
    assert normal_ppf(0.975) == pytest.approx(1.959964, abs=1e-5)
    assert normal_ppf(0.005) == pytest.approx(-2.575829, abs=1e-5)
    for p in (0.001, 0.2, 0.5, 0.9):
        assert normal_cdf(normal_ppf(p)) == pytest.approx(p, abs=1e-7)


def test_reduce_points_keeps_order_and_bounds_size():
    x, y = reduce_points(list(range(1000)), list(range(1000)), 100)
    assert len(x) == 100 and x == sorted(x) and y == sorted(y)


@pytest.mark.parametrize("phi", [0.9, 0.97])
def test_autocorrelated_noise_is_rarely_a_leak(phi):
    """Plain Mann–Kendall calls ~50% of such series a trend; the corrected test must stay near its level."""
    rnd = random.Random(11)
    leaks = sum(verdict([4096 * round(v / 4096) for v in ar1(100, phi, MIB, rnd)]) == "leak" for _ in range(100))
    assert leaks <= 4


def test_sawtooth_allocator_is_stable():
    rnd = random.Random(5)
    for period in (7, 17, 60):
        y = [16 * MIB * ((i % period) / period) + rnd.gauss(0, MIB) for i in range(300)]
        assert verdict(y) == "stable", period


def test_step_change_is_not_a_leak():
    rnd = random.Random(3)
    outcomes = [verdict([(8 * MIB if i >= 30 else 0) + rnd.gauss(0, 1.6 * MIB) for i in range(100)]) for _ in range(60)]
    assert "leak" not in outcomes
    assert "growth_stopped" in outcomes


def test_leak_under_sawtooth_and_noise_is_found():
    rnd = random.Random(8)
    y = [i * 64 * 1024 + 8 * MIB * ((i % 13) / 13) + rnd.gauss(0, MIB) for i in range(200)]
    assert verdict(y) == "leak"


def test_clean_ramp_with_page_wiggle_is_found_quickly():
    """A steady leak on page-granular RSS: the dominant-ramp rule must not let wiggles hide it."""
    y = [100 * MIB + 4096 * ((i * 37) // 4 + (i % 3)) for i in range(25)]
    t = trend(list(range(25)), y, confidence=0.99)
    assert t.increasing and t.dominance > 5


def test_segments_do_not_turn_a_reset_into_a_fall():
    # grows 1 MiB/iteration, reset to the start level at 50: still a leak within segments
    y = [(i % 50) * MIB for i in range(100)]
    seg = [i // 50 for i in range(100)]
    t = trend(list(range(100)), y, seg)
    assert t.slope == pytest.approx(MIB) and t.increasing
    whole = trend(list(range(100)), y)
    assert whole.slope < MIB * 0.9  # without segments the reset biases the slope


def test_too_few_points():
    assert trend([0, 1, 2], [1, 2, 3]) is None
    t = trend([0, 1, 2, 3, 4], [5, 5, 5, 5, 5])
    assert t is not None and t.slope == 0 and not t.increasing and not math.isnan(t.p)


def test_hockey_stick_leak_is_found():
    """A malloc leak first fills free heap (flat), then grows page by page: the monotone path rule."""
    y = [15 * MIB + 4096 * (i // 4) + max(0, i - 50) * 8192 for i in range(108)]
    x = list(range(108))
    assert not trend(x, y, confidence=0.99).increasing  # the corrected test alone cannot tell this curve
    assert verdict(y) == "leak"


def test_a_few_monotone_steps_are_not_a_leak():
    """PSS rises in a few steps when other processes sharing pages exit: not a leak."""
    steps = {6: 4096, 9: 1024, 26: 116 * 1024, 45: 150 * 1024, 50: 1024, 53: 7 * 1024, 54: 228 * 1024}
    level, y = 8 * MIB, []
    for i in range(54):
        level += steps.get(i, 0)
        y.append(level)
    assert verdict(y) != "leak"

"""RunStats: the loop and the memory timer thread update it at once."""

import sys
import threading

from hypothesis import given, settings, strategies as st

from soak.loop.stats import RunningStats, RunStats


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=50))
def test_running_stats_match_the_whole_list(xs):
    import statistics

    s = RunningStats()
    for x in xs:
        s.add(x)
    assert s.n == len(xs) and (s.first, s.last, s.min, s.max) == (xs[0], xs[-1], min(xs), max(xs))
    assert abs(s.mean - statistics.fmean(xs)) <= 1e-6 * (1 + max(map(abs, xs)))


def test_no_update_is_lost_between_threads():
    """Two threads (the loop and the memory timer) add samples and faults at once.
    Welford's update is several steps: without RunStats' lock, interleaved adds
    lose counts and corrupt the mean.  The switch interval is made tiny so that
    threads interleave inside those steps."""
    stats = RunStats()
    n, threads = 20000, 4
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        def work(k):
            for j in range(n):
                stats.add_memory({"rss": 1000 + k})
                stats.add_fault(f"k{k % 2}")
                stats.add_speed(10.0 + k, None)

        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    total = n * threads
    summary = stats.summary()
    assert stats.rss.n == total and stats.decode_tps.n == total
    assert summary["faults"] == total and sum(summary["faults_by_kind"].values()) == total
    assert abs(stats.rss.mean - (1000 + (threads - 1) / 2)) < 1e-6
    assert abs(summary["decode_tps_mean"] - (10.0 + (threads - 1) / 2)) < 1e-3

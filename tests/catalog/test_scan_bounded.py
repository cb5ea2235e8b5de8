"""The classifier's scan holds bounded state: what it keeps after 100,000
iterations is no more than after 10,000 (issue 12, streaming analysis).
Structural, not timed: every object reachable from the scan is counted.
The speed and peak-memory figures are benchmarks/bench_analysis_scale.py's."""

from __future__ import annotations

import gc
import random

import pytest

import soak.catalog._runscan as runscan
from soak.run_folder import reduce as run_folder  # the forked reduce: its knobs are patched here
from soak.analysis.streaming import Decimator, Intervals, Reservoir

ITER = ('{"event": "iteration", "seq": %d, "t": %.3f, "ts": "2026-12-01T00:00:00.000+00:00", "run_id": "b", '
        '"i": %d, "conversation": %d, "turn": %d, "prompt": "item %d", "status": 1, "ok": true, '
        '"decode_tps": %.3f, "context_tokens": %d, "output": "fine", "cl_errors": %s, "failures": []}\n')
MEM = ('{"event": "memory", "seq": %d, "t": %.3f, "ts": "2026-12-01T00:00:00.000+00:00", "run_id": "b", '
       '"source": "%s", "iteration": %s, "generation": 0, "rss": %d, "gpu_live_bytes": %d}\n')
FAULT = ('{"event": "fault", "seq": %d, "t": %.3f, "ts": "2026-12-01T00:00:00.000+00:00", "run_id": "b", '
         '"kind": "error_line", "phase": "respond", "iteration": %d, "line": "E/MNN: Map error", "pattern": "Map error"}\n')
FAULTS_AT = (5, 700, 3000, 9000)  # the same faults in both runs: only the number of iterations differs
ERRORS_AT = (9, 99, 999, 9999)


def _write(path, n: int) -> None:
    rng = random.Random(n)
    seq = 0
    with open(path, "w") as out:
        for i in range(n):
            conv, turn = divmod(i, 6)
            errors = "[-5]" if i in ERRORS_AT else "[]"  # iterations with CL errors: their tok/s kept apart
            out.write(ITER % (seq, i * 0.01, i, conv, turn, i, 2600 + rng.gauss(0, 30), 50 + 40 * turn, errors))
            if i in FAULTS_AT:
                out.write(FAULT % (seq + 1, i * 0.01, i))
            if i % 50 == 0:  # a timer sample with no iteration now and then
                out.write(MEM % (seq + 2, i * 0.01, "timer", "null", 400 << 20, 1 << 20))
            out.write(MEM % (seq + 3, i * 0.01, "iteration", i, (400 << 20) + i * 64, (1 << 20) + i * 2048))
            seq += 4


def _reachable(root) -> int:
    """Objects reachable from `root` (containers and what they hold)."""
    seen = {id(root)}
    todo = [root]
    while todo:
        obj = todo.pop()
        for ref in gc.get_referents(obj):
            if id(ref) not in seen and not isinstance(ref, type) and type(ref).__name__ not in ("module", "function"):
                seen.add(id(ref))
                todo.append(ref)
    return len(seen)


def _state(scan) -> int:
    return _reachable({k: v for k, v in vars(scan).items() if k != "findings"})


@pytest.fixture
def small_caps(monkeypatch):
    """Caps small enough that 10,000 iterations already fill them."""
    monkeypatch.setattr(runscan, "_WINDOW", 256, raising=False)
    monkeypatch.setattr(runscan, "TPS_CAP", 512, raising=False)


@pytest.mark.parametrize("parts", [1, 2])
def test_scan_state_does_not_grow_with_iterations(tmp_path, small_caps, parts):
    sizes = {}
    findings = {}
    for n in (10_000, 100_000):
        path = tmp_path / f"events-{n}.jsonl"
        _write(path, n)
        ranges = run_folder._split(path, path.stat().st_size, parts)
        scans = [runscan.Scan().consume(path, a, b) for a, b in ranges]
        scan = scans[0]
        for other in scans[1:]:
            scan.merge(other)
        assert scan.events == n * 2 + len(FAULTS_AT) + (n + 49) // 50
        sizes[n] = _state(scan)
        findings[n] = {k: (f.count, f.iterations, f.ranges) for k, f in scan.findings.items()}
        scan.finish(None, None)
        # the state still answers what the old per-iteration dict did
        assert scan.recorded.runs == [[0, n - 1]]
        assert len(scan.tps_err) == len(ERRORS_AT) and len(scan.tps_clean) == n - len(ERRORS_AT)
        f = next(f for f in scan.findings.values() if f.kind == "error_line")
        assert f.ranges == {"iteration": (5, 9000), "turn": (0, 5), "context_tokens": (50, 250)}
    assert findings[10_000] == findings[100_000]  # the findings are the faults': the same in both runs
    # bounded by the caps (a Decimator holds between half its cap and its cap): 10x the
    # iterations, not 10x the state (a per-iteration dict would be 30x the objects)
    assert sizes[100_000] < 1.5 * sizes[10_000], sizes


def test_reservoir_exact_below_cap_and_bounded_above():
    r = Reservoir(100, seed=1)
    for x in range(100):
        r.add(x)
    assert sorted(r.items) == list(range(100))
    for x in range(100, 100_000):
        r.add(x)
    assert len(r.items) == 100 and r.count == 100_000
    assert 30_000 < sorted(r.items)[50] < 70_000  # a uniform sample: its median near the stream's
    a, b = Reservoir(10), Reservoir(10)
    for x in range(4):
        a.add(x)
    for x in range(4, 9):
        b.add(x)
    a.merge(b)
    assert a.items == list(range(9)) and a.count == 9


def test_decimator_merge_keeps_the_cap_and_the_spacing():
    one, a, b = Decimator(64), Decimator(64), Decimator(64)
    for x in range(1000):
        one.add(x)
        (a if x < 300 else b).add(x)
    a.merge(b)
    assert a.count == one.count == 1000 and len(a.items) <= 64
    gaps = {y - x for x, y in zip(a.items, a.items[1:])}
    assert max(gaps) <= 2 * a.stride


def test_intervals():
    s = Intervals()
    for v in (0, 1, 2, 5, 6, 4, 10, 3):
        s.add(v)
    assert s.runs == [[0, 6], [10, 10]]
    assert s.any_between(7, 10) and not s.any_between(7, 9) and s.any_between(-5, 0)
    t = Intervals([11, 12, 20])
    s.merge(t)
    assert s.runs == [[0, 6], [10, 12], [20, 20]] and (s.lo, s.hi) == (0, 20)
    assert list(Intervals([3, 1, 2])) == [1, 2, 3]

"""soak.run_folder.reduce_lines: one pass, split over processes, merged in
order, gives what one sequential pass gives (the verdicts' series, the
classifier's scan), and names a damaged line by its number in the file."""

from __future__ import annotations

import json
import random

import pytest

from soak.run_folder import reduce as run_folder  # the forked reduce: its knobs are patched here
from soak.analysis.loaded_run import RunFolder, _Series
from soak.catalog._runscan import Scan
from soak.errors import BadInput


def _run(tmp_path, n: int = 3000, seed: int = 5):
    rng = random.Random(seed)
    lines = [{"event": "run_start", "schema": "1.1", "seed": seed}, {"event": "worker_start", "pid": 1, "generation": 0}]
    for i in range(n):
        lines.append({"event": "iteration", "i": i, "turn": i % 4, "context_tokens": 10 * (i % 4), "ok": True,
                      "decode_tps": 100.0 + rng.random(), "cl_errors": [] if i % 97 else [{"code": -5}],
                      "failures": [], "output": "x" * rng.randint(0, 80)})
        if rng.random() < 0.8:
            lines.append({"event": "memory", "source": "iteration", "iteration": i, "generation": 0,
                          "rss": 10**8 + i * 1000, "gpu_live_bytes": None})
        if rng.random() < 0.03:  # recoveries, some with no memory sample between them
            lines.append({"event": "fault", "kind": "error_line", "phase": "respond", "iteration": i,
                          "line": "E/MNN: Map error", "pattern": "Map error"})
            lines.append({"event": "recovery", "iteration": i, "trigger": ["error_line"], "recovered_by": "reset",
                          "steps": [{"step": "reset", "ok": True}], "duration_s": 0.01})
        if rng.random() < 0.05:
            lines.append({"event": "memory", "source": "timer", "iteration": None, "generation": 0, "rss": 10**8})
    lines.append({"event": "run_end", "reason": "iterations", "iterations": n, "elapsed_s": 1.0})
    path = tmp_path / "events.jsonl"
    with open(path, "w") as out:
        for k, e in enumerate(lines):
            e = {"event": e.pop("event"), "seq": k, "t": k * 0.001, "ts": "x", "run_id": "r", **e}
            out.write(json.dumps(e) + "\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "1.1", "run_id": "r"}))
    return path


@pytest.mark.parametrize("jobs", [2, 3, 4])
def test_parts_merge_to_the_sequential_pass(tmp_path, monkeypatch, jobs):
    path = _run(tmp_path)
    one_series, one_scan = run_folder.reduce_lines(path, lambda: [_Series(64, "e"), Scan()], jobs=1)
    monkeypatch.setattr(run_folder, "PARALLEL_MIN_BYTES", 0)
    series, scan = run_folder.reduce_lines(path, lambda: [_Series(64, "e"), Scan()], jobs=jobs)
    a, b = one_series.result(path), series.result(path)
    assert a["notable"] == b["notable"]
    assert (a["n_iterations"], a["n_memory"], a["run_id"], a["t_max"]) == \
        (b["n_iterations"], b["n_memory"], b["run_id"], b["t_max"])
    # thinned series: the same size class; the samples around every recovery kept, with the same segments
    assert len(b["iterations"].items) <= 64 and len(b["memory"]) <= 128 + 2 * len([e for e in b["notable"] if e["event"] == "recovery"])
    forced_a = {e["seq"]: seg for seg, e in a["memory"]}
    forced_b = {e["seq"]: seg for seg, e in b["memory"]}
    recoveries = [e["seq"] for e in a["notable"] if e["event"] == "recovery"]
    seqs = sorted(forced_a)
    for r in recoveries:  # the sample just before and just after each recovery is in both, in the same segment
        before = max((s for s in seqs if s < r), default=None)
        if before is not None:
            assert forced_b.get(before) == forced_a[before]
    assert {s: forced_a[s] for s in forced_b if s in forced_a} == {s: forced_b[s] for s in forced_b if s in forced_a}
    assert scan.events == one_scan.events and scan.recorded == one_scan.recorded
    assert {k: (f.count, f.iterations, f.ranges) for k, f in scan.findings.items()} == \
        {k: (f.count, f.iterations, f.ranges) for k, f in one_scan.findings.items()}
    assert sorted(scan.tps_err.items) == sorted(one_scan.tps_err.items)


def test_verdict_series_unchanged_for_a_short_run(tmp_path, monkeypatch):
    """Below the caps nothing is thinned: split or not, the same series."""
    _run(tmp_path, n=500)
    one = RunFolder(tmp_path)
    seq = (one.notable, [e for e in one.iteration_series], one.memory_samples)
    monkeypatch.setattr(run_folder, "PARALLEL_MIN_BYTES", 0)
    two = RunFolder(tmp_path)
    assert (two.notable, two.iteration_series, two.memory_samples) == seq


@pytest.mark.parametrize("parallel", [False, True])
def test_damaged_line_named_by_its_number(tmp_path, monkeypatch, parallel):
    path = _run(tmp_path, n=400)
    lines = path.read_bytes().split(b"\n")
    k = len(lines) * 3 // 4
    lines[k] = lines[k][:40]  # a cut line inside the file (not the last): damage
    path.write_bytes(b"\n".join(lines))
    if parallel:
        monkeypatch.setattr(run_folder, "PARALLEL_MIN_BYTES", 0)
    with pytest.raises(BadInput, match=rf"events.jsonl:{k + 1}: damaged"):
        run_folder.reduce_lines(path, lambda: [_Series(64, "e"), Scan()], jobs=2)


@pytest.mark.parametrize("parallel", [False, True])
def test_glued_records_named_by_their_line(tmp_path, monkeypatch, parallel):
    """A writer killed mid-line and a new one appending: two records on one line."""
    path = _run(tmp_path, n=400)
    lines = path.read_bytes().split(b"\n")
    k = len(lines) // 3
    lines[k] = lines[k][:-30] + lines[k + 1]
    path.write_bytes(b"\n".join(lines))
    if parallel:
        monkeypatch.setattr(run_folder, "PARALLEL_MIN_BYTES", 0)
    with pytest.raises(BadInput, match=rf"events.jsonl:{k + 1}: damaged"):
        run_folder.reduce_lines(path, lambda: [_Series(64, "e")], jobs=2)


def test_unterminated_last_line_is_dropped(tmp_path):
    path = _run(tmp_path, n=50)
    data = path.read_bytes()
    path.write_bytes(data + b'{"event": "iteration", "seq": 99999, "i": 5')
    series, scan = run_folder.reduce_lines(path, lambda: [_Series(64, "e"), Scan()], jobs=1)
    assert series.its.count == 50 and scan.events == len(data.splitlines())

"""The classifier's fast event reading agrees with json.loads, whatever the
prompt and output hold, and a file split into ranges is read exactly once."""

from __future__ import annotations

import json
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from soak.run_folder import reduce as run_folder  # the forked reduce: its knobs are patched here
from soak.catalog import _eventread as R
from soak.catalog._runscan import Scan

from _catalog_runs import iteration

# text that looks like the keys the fast path searches for
tricky = st.text() | st.sampled_from(['"i": 5, ', '\\"turn\\": 9', '"cl_errors": [], ', '{"event": "fault"}',
                                      '"decode_tps": 1e9, "ok": false', "\x00\n\r\\", '"rss": 1, '])


@settings(max_examples=200)
@given(st.integers(0, 10**9), st.integers(0, 64), st.integers(0, 10**6),
       st.floats(0.001, 1e6, allow_nan=False), tricky, tricky, st.booleans(), st.booleans())
def test_iteration_fields_match_json(i, turn, ctx, tps, prompt, output, errors, failed):
    _, fields = iteration(i, turn=turn, context_tokens=ctx, decode_tps=tps, prompt=prompt, output=output,
                          cl_errors=[{"code": -5, "name": "CL_OUT_OF_RESOURCES", "info": prompt}] if errors else [],
                          failures=["cl_error"] if failed else [])
    raw = (json.dumps({"event": "iteration", "seq": 1, "t": 0.5, "ts": "x", "run_id": "r", **fields},
                      ensure_ascii=False) + "\n").encode()
    fast = R.iteration_fields(raw)
    ref = json.loads(raw)
    assert fast is not None
    assert (fast["i"], fast["turn"], fast["context_tokens"], fast["decode_tps"], fast["ok"]) == \
        (ref["i"], ref["turn"], ref["context_tokens"], ref["decode_tps"], ref["ok"])
    assert bool(fast["cl_errors"]) == bool(ref["cl_errors"]) and bool(fast["failures"]) == bool(ref["failures"])


@given(st.integers(1, 10**6), st.integers(0, 10**6), st.integers(1, 500), st.text())
def test_repeated_fault_identity(seq, it, count, info):
    def line(seq, it, count):
        return json.dumps({"event": "fault", "seq": seq, "t": seq / 10, "ts": "2026-01-01T00:00:00.000+00:00",
                           "run_id": "r1", "iteration": it, "kind": "cl_error", "phase": "decode", "code": -36,
                           "info": info, "line": f"CL ERROR CODE : -36, info:{info}", "count": count,
                           "offset": seq * 7}, ensure_ascii=False).encode()
    ident1, vol = R.split_volatile(line(seq, it, count))
    ident2, _ = R.split_volatile(line(seq + 1, it + 3, count + 1))
    assert ident1 == ident2 and vol == {"seq": seq, "iteration": it, "count": count, "offset": seq * 7}
    other, _ = R.split_volatile(line(seq, it, count).replace(b'"code": -36', b'"code": -5'))
    assert other != ident1


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=300),
       st.integers(1, 6), st.booleans(), st.integers(1, 64))
def test_ranges_read_every_line_once(tmp_path_factory, lines, parts, final_newline, chunk):
    """run_folder's parts and chunks: every line once, in order, whatever the chunk size."""
    p = tmp_path_factory.mktemp("rl") / "events.jsonl"
    p.write_bytes(b"\n".join(lines) + (b"\n" if final_newline and lines else b""))
    size = p.stat().st_size
    old, run_folder._CHUNK = run_folder._CHUNK, chunk
    try:
        got = []
        for a, b in run_folder._split(p, size, parts) if size else []:
            for whole, last in run_folder._chunks(p, a, b, size):
                got += whole.split(b"\n") + ([last] if last is not None else [])
    finally:
        run_folder._CHUNK = old
    assert [x for x in got if x] == [x for x in lines if x]


def test_parallel_scan_equals_single(tmp_path):
    """Split over processes, merged in order: the same findings and counts."""
    from soak.events import EventLog

    from _catalog_runs import cl_fault

    log = EventLog(tmp_path / "events.jsonl", run_id="p")
    for i in range(3000):
        name, fields = cl_fault(i, f"CL ERROR CODE : -36, info:{['Raster', 'While', 'run3d'][i % 3]} ",
                                count=i % 5 + 1)
        log.emit(name, **fields)
        if i % 7 == 0:
            log.emit("fault", iteration=i, kind="error_line", phase="load", line=f"Alloc Buffer {i * 13} error, code:-4")
        name, fields = iteration(i, turn=i % 6, context_tokens=i, cl_errors=[{"code": -36}])
        log.emit(name, **fields)
        log.emit("memory", source="iteration", iteration=i, rss=10**8 + i, gpu_live_bytes=None, generation=0)
    log.close()
    path = tmp_path / "events.jsonl"
    one = Scan().consume(path)
    parts = [Scan().consume(path, a, b) for a, b in run_folder._split(path, path.stat().st_size, 4)]
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    assert one.events == merged.events == 3000 * 3 + 429
    assert one.code_counts == merged.code_counts and one.recorded == merged.recorded
    assert one.recorded.runs == [[0, 2999]]
    assert list(one.findings) == list(merged.findings)
    for k, f in one.findings.items():
        g = merged.findings[k]
        assert (f.count, f.events, f.iterations, f.first_seq, f.last_seq, f.ranges) == \
            (g.count, g.events, g.iterations, g.first_seq, g.last_seq, g.ranges)
        # faults come before their iteration's event: its turn and context are folded in when it is read
        assert f.ranges == {"turn": (min(i % 6 for i in f.iterations), max(i % 6 for i in f.iterations)),
                            "context_tokens": (min(f.iterations), max(f.iterations))}


def test_scan_run_over_processes(tmp_path, monkeypatch):
    """The process-pool path of scan_run (used above 32 MiB) gives what one process gives."""
    import soak.catalog._runscan as runscan
    from soak.events import EventLog

    from _catalog_runs import cl_fault

    log = EventLog(tmp_path / "events.jsonl", run_id="pp")
    for i in range(500):
        name, fields = cl_fault(i, f"CL ERROR CODE : -5, info:{'Raster' if i % 2 else 'While'} ", count=2)
        log.emit(name, **fields)
        name, fields = iteration(i, turn=i % 3, context_tokens=i)
        log.emit(name, **fields)
    log.close()
    one = runscan.scan_run(tmp_path, jobs=1)
    import concurrent.futures

    from soak.run_folder import reduce as run_folder

    monkeypatch.setattr(run_folder, "PARALLEL_MIN_BYTES", 0)
    pools = []

    class Recorded(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *a, **kw):
            pools.append(kw.get("max_workers"))
            super().__init__(*a, **kw)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Recorded)
    assert threading.active_count() == 1, "the pool path needs a thread-free process"
    two = runscan.scan_run(tmp_path, jobs=2)
    assert pools == [2]
    assert one.events == two.events == 1000 and one.code_counts == two.code_counts == {-5: 1000}
    assert {k: (f.count, f.iterations) for k, f in one.findings.items()} == \
        {k: (f.count, f.iterations) for k, f in two.findings.items()}

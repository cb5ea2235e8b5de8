"""soak.run_folder owns the run folder: names, schema, atomic writes, the one
event reader and its rule for damaged lines, and the running/complete state.
Every judging command (classify, gate, report, bundle) follows the same rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from soak import run_folder
from soak.cli import main
from soak.errors import BadInput, ExitCode
from soak.events import EventLog

MIB = 1 << 20


def _write_run(run_dir: Path, iterations: int = 30, end: bool = True, close: bool = True) -> EventLog:
    run_dir.mkdir(parents=True, exist_ok=True)
    run_folder.write_json(run_dir / run_folder.MANIFEST, {"schema": run_folder.SCHEMA, "run_id": run_dir.name,
                                                          "backend": "cpu", "seed": 1})
    log = EventLog(run_dir / run_folder.EVENTS, run_dir.name)
    log.emit("run_start", seed=1, engine="test", backend="cpu")
    log.emit("worker_start", pid=1, generation=0)
    log.emit("load", ok=True, backend_actual="cpu", log_span=[0, 0])
    for i in range(iterations):
        log.emit("iteration", i=i, conversation=i // 4, turn=i % 4, prompt=f"prompt {i}", ok=True, status=1,
                 decode_tps=100.0 + (i % 3), wall_s=0.01, prefill_us=100, context_tokens=10 + i % 4,
                 output="out", cl_errors=[], failures=[], log_span=[0, 0], worker_generation=0)
        log.emit("memory", source="iteration", iteration=i, generation=0, rss=100 * MIB + (i % 2) * 4096,
                 uss=80 * MIB, pss=90 * MIB, gpu_live_bytes=None)
        if i == 10:
            log.emit("fault", kind="error_line", phase="respond", iteration=i, line="E/MNN: boom")
    if end:
        log.emit("run_end", reason="iterations", iterations=iterations, elapsed_s=1.0)
    if close:
        log.close()
    return log


@pytest.fixture
def run(tmp_path) -> Path:
    d = tmp_path / "r1"
    _write_run(d)
    return d


def _lines(run: Path) -> list[bytes]:
    return (run / run_folder.EVENTS).read_bytes().splitlines(keepends=True)


def _set_lines(run: Path, lines: list[bytes]) -> None:
    (run / run_folder.EVENTS).write_bytes(b"".join(lines))


def _judge(run: Path, tmp_path: Path) -> dict[str, int]:
    """Exit code of every judging command on `run`."""
    out = {}
    out["classify"] = main(["classify", str(run), "--json"])
    out["gate"] = main(["gate", str(run), "--out", str(tmp_path / "g.json")])
    out["bundle"] = main(["bundle", str(run), "-o", str(tmp_path / "b.tar.gz")])
    pytest.importorskip("matplotlib")
    out["report"] = main(["report", str(run), "-o", str(tmp_path / "r.html")])
    return out


def test_the_writer_records_the_schema(run):
    start = next(run_folder.read_events(run, {"run_start"}))
    assert start["schema"] == run_folder.SCHEMA
    assert json.loads((run / run_folder.MANIFEST).read_text())["schema"] == run_folder.SCHEMA


def test_a_newer_major_schema_is_bad_input_for_every_judge(run, tmp_path, capsys):
    m = json.loads((run / run_folder.MANIFEST).read_text())
    m["schema"] = f"{run_folder.SCHEMA_MAJOR + 1}.0"
    (run / run_folder.MANIFEST).write_text(json.dumps(m))
    codes = _judge(run, tmp_path)
    assert set(codes.values()) == {ExitCode.BAD_INPUT}, codes
    assert "upgrade soak" in capsys.readouterr().err


def test_a_newer_schema_in_run_start_is_bad_input(run, tmp_path, capsys):
    lines = _lines(run)
    start = json.loads(lines[0])
    start["schema"] = f"{run_folder.SCHEMA_MAJOR + 1}.3"
    lines[0] = (json.dumps(start) + "\n").encode()
    _set_lines(run, lines)
    assert main(["gate", str(run), "--out", str(tmp_path / "g.json")]) == ExitCode.BAD_INPUT
    assert "schema" in capsys.readouterr().err


def test_an_older_or_minor_schema_is_read(run):
    assert run_folder.schema_major(1) == 1 and run_folder.schema_major("1.7") == 1
    run_folder.check_schema(f"{run_folder.SCHEMA_MAJOR}.99", "x")
    run_folder.check_schema(None, "x")


@pytest.mark.parametrize("where", ["iteration", "memory", "fault", "load"])
def test_a_damaged_middle_line_is_exit_3_with_file_and_line_for_every_judge(run, tmp_path, capsys, where):
    lines = _lines(run)
    k = next(n for n, raw in enumerate(lines) if raw.startswith(b'{"event": "' + where.encode()))
    lines[k] = lines[k][: len(lines[k]) // 2] + b"\n"  # cut in the middle, the next line intact
    _set_lines(run, lines)
    codes = _judge(run, tmp_path)
    assert set(codes.values()) == {ExitCode.BAD_INPUT}, codes
    err = capsys.readouterr().err
    assert f"{run / run_folder.EVENTS}:{k + 1}: damaged event line" in err


def test_two_records_glued_on_one_line_are_damage(run, tmp_path, capsys):
    lines = _lines(run)
    k = next(n for n, raw in enumerate(lines) if raw.startswith(b'{"event": "memory'))
    lines[k] = lines[k][:40] + lines[k + 1]  # a writer killed mid-line, then another line appended
    del lines[k + 1]
    _set_lines(run, lines)
    assert main(["classify", str(run), "--json"]) == ExitCode.BAD_INPUT
    assert main(["gate", str(run), "--out", str(tmp_path / "g.json")]) == ExitCode.BAD_INPUT
    assert f":{k + 1}: damaged" in capsys.readouterr().err


def test_a_truncated_last_line_is_dropped_by_every_judge(tmp_path, capsys):
    run = tmp_path / "killed"
    _write_run(run, end=False)
    data = (run / run_folder.EVENTS).read_bytes()
    (run / run_folder.EVENTS).write_bytes(data + b'{"event": "iteration", "seq": 999, "t": 1.0, "pro')
    reader = run_folder.EventReader(run)
    assert sum(1 for _ in reader) == data.count(b"\n") and reader.truncated_tail
    codes = _judge(run, tmp_path)
    assert codes["classify"] == ExitCode.OK and codes["bundle"] == ExitCode.OK and codes.get("report", 0) == 0
    assert codes["gate"] in (ExitCode.OK, ExitCode.FAILED)


def test_lenient_reading_counts_and_reports_damaged_lines(run):
    lines = _lines(run)
    lines[5] = b"garbage\n"
    lines[9] = b"[1, 2]\n"  # JSON, but not an event
    _set_lines(run, lines)
    reader = run_folder.EventReader(run, strict=False)
    n = sum(1 for _ in reader)
    assert n == len(lines) - 2
    assert reader.damaged == [6, 10] and reader.damaged_count == 2
    assert ":" in reader.report() and "2 damaged line(s)" in reader.report()
    with pytest.raises(BadInput, match=r":6: damaged event line"):
        list(run_folder.read_events(run))


def test_kinds_filter_reads_only_what_is_asked(run):
    kinds = {e["event"] for e in run_folder.read_events(run, {"fault", "run_end"})}
    assert kinds == {"fault", "run_end"}


def test_state_complete_running_and_ended_without_run_end(tmp_path):
    done = tmp_path / "done"
    _write_run(done)
    assert run_folder.state(done) == run_folder.COMPLETE
    live = tmp_path / "live"
    log = _write_run(live, end=False, close=False)
    try:
        assert run_folder.state(live) == run_folder.RUNNING
        assert (live / run_folder.LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(BadInput, match="another soak run"):
            EventLog(live / run_folder.EVENTS, "live")  # a second writer on the same folder
    finally:
        log.close()
    assert run_folder.state(live) == run_folder.ENDED_WITHOUT_RUN_END


def test_gate_on_a_running_folder_says_in_progress(tmp_path, capsys):
    live = tmp_path / "live"
    log = _write_run(live, end=False, close=False)
    try:
        main(["gate", str(live), "--out", str(tmp_path / "g.json")])
        assert "in progress" in capsys.readouterr().err
        assert json.loads((tmp_path / "g.json").read_text())["state"] == run_folder.RUNNING
        pytest.importorskip("matplotlib")
        assert main(["report", str(live), "-o", str(tmp_path / "r.html")]) == ExitCode.OK
        assert "in progress" in (tmp_path / "r.html").read_text()
    finally:
        log.close()


def test_run_end_far_from_the_tail_is_found(tmp_path):
    run = tmp_path / "long"
    _write_run(run, iterations=5)
    with open(run / run_folder.EVENTS, "ab") as fh:  # a later line pushes run_end out of the tail window
        fh.write(b'{"event": "note", "seq": 99, "t": 2.0, "pad": "' + b"x" * 2000 + b'"}\n')
    assert run_folder.has_run_end(run, tail_bytes=512)


def test_judges_never_rewrite_their_inputs(run, tmp_path):
    from soak.analysis.verdicts import compute_verdicts

    compute_verdicts(run)  # what `soak run` writes
    main(["classify", str(run)])  # writes classification.json, its own output

    def files():  # content, inode and mtime: an atomic rewrite with the same bytes is still a rewrite
        return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in run.iterdir() if p.is_file()}

    before = files()
    assert main(["gate", str(run)]) in (ExitCode.OK, ExitCode.FAILED)
    assert main(["bundle", str(run), "-o", str(tmp_path / "b.tar.gz")]) == ExitCode.OK
    after = files()
    assert (run / run_folder.GATE).is_file()
    assert {k: v for k, v in after.items() if k != run_folder.GATE} == before


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "x.json"
    run_folder.write_json(target, {"a": 1, "nan": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1, "nan": None}
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BadInput, match="cannot write"):
        run_folder.write_json(blocker / "y.json", {"b": 2})
    assert json.loads(target.read_text()) == {"a": 1, "nan": None}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_what_a_run_folder_is(tmp_path, run):
    assert run_folder.is_run_folder(run)
    assert not run_folder.is_run_folder(tmp_path)
    logs_only = tmp_path / "logs_only"
    logs_only.mkdir()
    (logs_only / run_folder.ENGINE_LOG).write_text("I/MNN: hello\n")
    assert run_folder.is_classifiable(logs_only) and not run_folder.is_run_folder(logs_only)
    with pytest.raises(BadInput, match="not a soak run folder"):
        run_folder.require(logs_only)


def test_text_that_is_not_valid_unicode_is_recorded_and_replayed(soak_run, tmp_path):
    """A lone surrogate in a prompt: the event log keeps it (escaped, valid
    UTF-8), and replay runs the conversation instead of crashing."""
    from soak.loop.replay import replay

    d = tmp_path / "sur"
    d.mkdir()
    log = EventLog(d / run_folder.EVENTS, "sur")
    log.emit("iteration", i=0, prompt="a\ud800b 你")
    log.close()
    assert [e["prompt"] for e in run_folder.read_events(d)] == ["a\ud800b 你"]

    result, events = soak_run(iterations=3)
    lines = _lines(result.run_dir)
    k = next(n for n, raw in enumerate(lines) if raw.startswith(b'{"event": "iteration"'))
    ev = json.loads(lines[k])
    ev["prompt"] = "lone \ud83d surrogate"
    lines[k] = (json.dumps(ev) + "\n").encode()
    _set_lines(result.run_dir, lines)
    replayed, _verdict = replay(result.run_dir, ev["i"], out_dir=str(tmp_path / "rp"), quiet=True)
    prompts = [e["prompt"] for e in run_folder.read_events(replayed.run_dir, {"iteration"})]
    assert prompts and prompts[-1] == "lone \ufffd surrogate"

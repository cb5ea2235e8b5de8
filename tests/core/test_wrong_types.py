"""Every consumer of a run folder is type-tolerant: an event field of the
wrong type (a hand-edited, damaged or foreign events.jsonl) gives a verdict
or a clear bad-input error (exit 3), never a traceback.  Hypothesis puts a
value of any JSON type in any field the consumers read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from soak import run_folder
from soak.cli import main
from soak.errors import ExitCode
from soak.events import EventLog

MIB = 1 << 20

FIELDS = {
    "run_start": ["seed", "backend", "schema", "run_id"],
    "worker_start": ["generation", "pid"],
    "load": ["ok", "backend_actual", "log_span", "status", "generation"],
    "iteration": ["i", "t", "seq", "ok", "status", "status_name", "decode_tps", "prefill_tps", "wall_s",
                  "prefill_us", "decode_us", "context_tokens", "conversation", "turn", "log_span", "failures",
                  "cl_errors", "prompt", "output", "worker_generation", "max_new_tokens", "generated_tokens"],
    "memory": ["rss", "uss", "pss", "gpu_live_bytes", "iteration", "source", "generation", "t", "seq"],
    "fault": ["kind", "phase", "iteration", "line", "code", "info", "count", "last_lines", "signal",
              "symptoms", "api", "seq", "exit_code", "status", "pattern", "injected"],
    "recovery": ["trigger", "steps", "recovered_by", "duration_s", "rss_before", "rss_after", "iteration", "seq"],
    "run_end": ["iterations", "elapsed_s", "reason"],
}

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
mutation = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda kind: st.tuples(st.just(kind), st.sampled_from(FIELDS[kind]), json_values))


def _write_base(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    run_folder.write_json(run_dir / run_folder.MANIFEST, {"schema": run_folder.SCHEMA, "run_id": "wt",
                                                          "backend": "cpu", "seed": 1})
    (run_dir / run_folder.ENGINE_LOG).write_bytes(b"I/MNN: load\nE/MNN: boom\n")
    log = EventLog(run_dir / run_folder.EVENTS, "wt")
    log.emit("run_start", seed=1, engine="test", backend="cpu")
    log.emit("worker_start", pid=1, generation=0)
    log.emit("load", ok=True, backend_actual="cpu", log_span=[0, 12], status=0, generation=0)
    for i in range(24):
        log.emit("iteration", i=i, conversation=i // 3, turn=i % 3, prompt=f"p{i}", ok=i != 9, status=1,
                 status_name="NORMAL_FINISHED", decode_tps=100.0 + i % 4, prefill_tps=900.0, wall_s=0.01,
                 prefill_us=100, decode_us=900, context_tokens=10 + i % 3, output="o", cl_errors=[],
                 failures=[] if i != 9 else ["bad_output"], log_span=[12, 24], worker_generation=0,
                 max_new_tokens=16, generated_tokens=4)
        log.emit("memory", source="iteration", iteration=i, generation=0, rss=100 * MIB + i * 8192,
                 uss=80 * MIB, pss=90 * MIB, gpu_live_bytes=MIB)
        if i == 9:
            log.emit("fault", kind="error_line", phase="respond", iteration=i, line="E/MNN: boom", code=-5,
                     info="x", count=1, last_lines=["a"], signal=None, symptoms=["s"], api="clFinish",
                     exit_code=None, status=1, pattern="boom", injected=False)
            log.emit("recovery", iteration=i, trigger=["error_line"], recovered_by="reset",
                     steps=[{"step": "reset", "ok": True, "duration_s": 0.01}], duration_s=0.01,
                     rss_before=100 * MIB, rss_after=100 * MIB)
    log.emit("run_end", reason="iterations", iterations=24, elapsed_s=1.0)
    log.close()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("wrong-types") / "base"
    _write_base(d)
    return d


def _mutated(base: Path, dest: Path, kind: str, field: str, value) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest)
    out = []
    for raw in (base / run_folder.EVENTS).read_bytes().splitlines():
        ev = json.loads(raw)
        if ev.get("event") == kind:
            ev[field] = value
        out.append(json.dumps(ev, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    (dest / run_folder.EVENTS).write_bytes(b"\n".join(out) + b"\n")
    return dest


def _schema(m: tuple) -> bool:
    """The one mutation that may be bad input: a run_start `schema` (one this soak may not read).  Any
    other field of the wrong type is dropped by the reader, so the run still gets its verdict."""
    return m[:2] == ("run_start", "schema")


def _ok(code: int, m: tuple) -> bool:
    # pass or fail; bad input (3) only for an unreadable schema; never a traceback (main would not catch it)
    return code in (0, 1) or (code == ExitCode.BAD_INPUT and _schema(m))


COMMON = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@COMMON
@given(m=mutation)
def test_classify(base_run, tmp_path, m):
    run = _mutated(base_run, tmp_path / "r", *m)
    assert _ok(main(["classify", str(run), "--json"]), m)


@COMMON
@given(m=mutation)
def test_gate(base_run, tmp_path, m):
    run = _mutated(base_run, tmp_path / "r", *m)
    assert _ok(main(["gate", str(run), "--out", str(tmp_path / "g.json")]), m)


@COMMON
@given(m=mutation)
@example(m=("iteration", "i", 7))  # every iteration numbered alike: no trend to fit, still a verdict
def test_verdicts(base_run, tmp_path, m):
    from soak.analysis.verdicts import compute_verdicts

    run = _mutated(base_run, tmp_path / "r", *m)
    try:
        verdicts = compute_verdicts(run, write=False)
    except run_folder.BadInput as exc:  # only a schema this soak can't read, and it says so
        assert _schema(m), f"{m}: bad input instead of a verdict: {exc.message}"
        assert "schema" in exc.message and exc.hint and exc.exit_code == ExitCode.BAD_INPUT
        return
    assert set(verdicts["memory"]["series"]) >= {"rss", "uss", "pss", "gpu_live_bytes"}
    assert {"leak", "recovery_rate", "perf_degrading"} <= set(verdicts["overall"])
    assert all(isinstance(d.get("verdict"), str) for d in verdicts["perf"]["drift"].values())


@COMMON
@given(m=mutation)
def test_bundle(base_run, tmp_path, m):
    run = _mutated(base_run, tmp_path / "r", *m)
    assert _ok(main(["bundle", str(run), "-o", str(tmp_path / "b.tar.gz")]), m)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=mutation)
def test_report(base_run, tmp_path, m):
    pytest.importorskip("matplotlib")
    run = _mutated(base_run, tmp_path / "r", *m)
    assert _ok(main(["report", str(run), "-o", str(tmp_path / "r.html")]), m)

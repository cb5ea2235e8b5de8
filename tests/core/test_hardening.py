"""Issue 13: hostile options, run ids that escape --out, two runs with one run id, a full disk,
SIGTERM and a second Ctrl-C.  Each case failed before its fix (traceback, exit 0 or 1, no summary)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coresupport import soak_cli
from soak import errors
from soak.errors import ExitCode
from soak.run_folder import read_events
from soak.loop.config import RunConfig, validate
from soak.loop.runner import run_soak
from soak.loop.session import Timeouts

SOAK = [sys.executable, "-m", "soak"]


def assert_clean_error(proc, code, *needles):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# -- item 2: the run folder stays under --out ----------------------------------------------------

@pytest.mark.parametrize("run_id", ["../escaped", "a/b", "/ABS", ".", "..", "-x", "r" * 300, "bad\nid", ""])
def test_run_id_that_is_not_one_folder_name_is_refused(tmp_path, run_id):
    out = tmp_path / "out"
    if run_id == "/ABS":
        run_id = str(tmp_path / "abs")
    proc = soak_cli("run", "--engine", "test", "--iterations", "1", "--out", str(out), f"--run-id={run_id}")
    assert_clean_error(proc, ExitCode.BAD_INPUT, "--run-id", "one folder name")
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])  # nothing beside --out
    assert not out.exists() or not any(out.iterdir())


def test_out_on_a_file_is_refused(tmp_path):
    a_file = tmp_path / "logs"
    a_file.write_text("not a folder\n")
    proc = soak_cli("run", "--engine", "test", "--iterations", "1", "--out", str(a_file))
    assert_clean_error(proc, ExitCode.BAD_INPUT, "--out", "not a folder")
    assert a_file.read_text() == "not a folder\n"
    proc = soak_cli("run", "--engine", "test", "--iterations", "1", "--out", str(a_file / "below"))
    assert_clean_error(proc, ExitCode.BAD_INPUT, "--out")


def test_out_where_nobody_can_write_is_refused():
    # /proc takes no new folders, for root too
    proc = soak_cli("run", "--engine", "test", "--iterations", "1", "--out", "/proc/soak-logs")
    assert_clean_error(proc, ExitCode.BAD_INPUT, "--out /proc/soak-logs", "write")


def test_the_python_api_refuses_an_escaping_run_id(tmp_path):
    with pytest.raises(errors.BadInput):
        run_soak(RunConfig(engine="test", iterations=1, out_dir=str(tmp_path / "out"), run_id="../up", quiet=True))
    assert not (tmp_path / "up").exists()


# -- item 5: one run id, one run ----------------------------------------------------------------

def test_an_existing_empty_folder_is_not_taken_over(tmp_path):
    (tmp_path / "r").mkdir()
    proc = soak_cli("run", "--engine", "test", "--iterations", "1", "--out", str(tmp_path), "--run-id", "r")
    assert_clean_error(proc, ExitCode.BAD_INPUT, "already exists")
    assert not any((tmp_path / "r").iterdir())


def test_simultaneous_starts_with_one_run_id_give_one_run(tmp_path):
    """Eight runs released at once (a barrier), in threads as multi-device runs them."""
    import threading

    n = 8
    barrier = threading.Barrier(n)
    outcomes = [None] * n

    def one(k):
        cfg = RunConfig(engine="test", iterations=2, out_dir=str(tmp_path), run_id="same", quiet=True,
                        max_new_tokens=4, timeouts=Timeouts(respond=30))
        barrier.wait()
        try:
            outcomes[k] = run_soak(cfg).exit_code
        except errors.BadInput as exc:
            outcomes[k] = exc.message

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert outcomes.count(0) == 1, outcomes
    assert all("already exists" in o for o in outcomes if o != 0), outcomes
    events = list(read_events(tmp_path / "same"))
    assert [e["event"] for e in events].count("run_start") == 1
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[-1]["event"] == "run_end" and events[-1]["iterations"] == 2


def test_parallel_starts_with_one_run_id_give_one_run(tmp_path):
    n = 6
    for attempt in range(1):
        run_id = f"same{attempt}"
        procs = [subprocess.Popen([*SOAK, "run", "--engine", "test", "--iterations", "3", "--quiet",
                                   "--out", str(tmp_path), "--run-id", run_id],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
        results = [(p.wait(120), *p.communicate()) for p in procs]
        codes = sorted(r[0] for r in results)
        assert codes == [0] + [ExitCode.BAD_INPUT] * (n - 1), results
        for code, _, err in results:
            assert "Traceback" not in err
            if code:
                assert "already exists" in err
        events = list(read_events(tmp_path / run_id))
        assert [e["event"] for e in events].count("run_start") == 1
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert events[-1]["event"] == "run_end" and events[-1]["iterations"] == 3


# -- item 7: values that switch something off or make no sense are refused -------------------------

@pytest.mark.parametrize("args,needle", [
    (["--memory-interval", "0"], "--memory-interval"),
    (["--memory-interval", "0.001"], "--memory-interval"),
    (["--timeout-respond", "0"], "--timeout-respond"),
    (["--timeout-respond", "nan"], "--timeout-respond"),
    (["--timeout-load", "inf"], "--timeout-load"),
    (["--timeout-teardown", "-1"], "--timeout-teardown"),
    (["--max-new-tokens", "-5"], "--max-new-tokens"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--max-turns", "0"], "--max-turns"),
    (["--context", "0"], "--context"),
    (["--duration", "0"], "--duration"),
    (["--plugin", "/nonexistent.so"], "--plugin"),
    (["--engine-lib", "/nonexistent.so"], "--engine-lib"),
])
def test_silently_accepted_options_are_refused(tmp_path, args, needle):
    proc = soak_cli("run", "--engine", "test", "--iterations", "2", "--out", str(tmp_path), *args)
    assert_clean_error(proc, ExitCode.BAD_INPUT, needle)
    assert not any(tmp_path.iterdir())  # refused before a run folder exists


BAD_SECONDS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
                        st.floats(max_value=0.0), st.integers(max_value=0))
BAD_COUNTS = st.one_of(st.integers(max_value=0), st.sampled_from([math.nan, math.inf, 1.5, True, "3"]))


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["start", "load", "respond", "reset", "teardown"]), value=BAD_SECONDS)
def test_timeouts_must_be_finite_and_positive(field, value):
    cfg = RunConfig(engine="test", timeouts=Timeouts(**{field: value}))
    with pytest.raises(errors.BadInput, match=f"--timeout-{field}"):
        validate(cfg)


def test_the_stall_timer_may_be_off_but_not_nan():
    validate(RunConfig(engine="test", timeouts=Timeouts(stall=None)))
    for bad in (math.nan, 0.0, -1.0, math.inf):
        with pytest.raises(errors.BadInput, match="--timeout-stall"):
            validate(RunConfig(engine="test", timeouts=Timeouts(stall=bad)))


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(BAD_SECONDS, st.floats(min_value=0.0, max_value=0.0499)))
def test_memory_interval_must_leave_the_engine_alone(value):
    with pytest.raises(errors.BadInput, match="--memory-interval"):
        validate(RunConfig(engine="test", memory_interval_s=value))


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["max_new_tokens", "max_turns", "context_tokens", "max_unrecovered"]),
       value=BAD_COUNTS)
def test_counts_must_be_whole_and_positive(field, value):
    with pytest.raises(errors.BadInput):
        validate(RunConfig(engine="test", **{field: value}))


@settings(max_examples=60, deadline=None)
@given(timeout=st.floats(min_value=1e-3, max_value=1e6), interval=st.floats(min_value=0.05, max_value=1e6),
       tokens=st.integers(min_value=1, max_value=1 << 20), iterations=st.none() | st.integers(min_value=0))
def test_sane_values_pass(timeout, interval, tokens, iterations):
    validate(RunConfig(engine="test", timeouts=Timeouts(respond=timeout), memory_interval_s=interval,
                       max_new_tokens=tokens, iterations=iterations))


# -- item 4: SIGTERM and a second Ctrl-C -----------------------------------------------------------

def _start(tmp_path, run_id, *extra):
    proc = subprocess.Popen([*SOAK, "run", "--engine", "test", "--iterations", "100000", "--quiet",
                             "--out", str(tmp_path), "--run-id", run_id, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, tmp_path / run_id / "events.jsonl"


def _wait_for(events_file, needle, count=1, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if events_file.exists() and events_file.read_text().count(needle) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{needle} x{count} never appeared in {events_file}")


def _ended(run_dir, reason):
    summary = json.loads((run_dir / "summary.json").read_text())
    events = list(read_events(run_dir))
    assert events[-1]["event"] == "run_end" and events[-1]["reason"] == reason, events[-1]
    assert [e["seq"] for e in events] == list(range(len(events)))  # no line lost or doubled
    assert summary["end_reason"] == reason
    assert not (run_dir / ".soak-reserve").exists()
    return summary, events


def test_sigterm_writes_run_end_and_the_summary(tmp_path):
    proc, events_file = _start(tmp_path, "t")
    _wait_for(events_file, '"event": "iteration"', 5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.TERMINATED == 143, err
    assert "Traceback" not in err
    summary, events = _ended(tmp_path / "t", "terminated")
    assert summary["iterations"] >= 5
    assert summary["iterations"] == sum(e["event"] == "iteration" for e in events)


@pytest.mark.parametrize("how", ["sigterm", "two_ctrl_c"])
def test_abort_during_a_hang_kills_the_worker_quickly_and_writes_the_summary(tmp_path, how):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"kind": "hang", "at": [3]}]))
    # the engine hangs at iteration 3; the watchdog and the teardown would wait minutes
    proc, events_file = _start(tmp_path, "h", "--fault-plan", str(plan), "--timeout-respond", "600",
                               "--timeout-teardown", "300")
    _wait_for(events_file, '"i": 2,')
    time.sleep(0.5)  # into the hang
    started = time.monotonic()
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)  # the first one waits for the iteration, which hangs
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - started
    assert took < 30, took  # not the 300 s teardown, not the 600 s watchdog
    assert proc.returncode == (ExitCode.TERMINATED if how == "sigterm" else ExitCode.INTERRUPTED), err
    assert "Traceback" not in err
    summary, events = _ended(tmp_path / "h", "terminated" if how == "sigterm" else "interrupted")
    assert events[-1]["aborted"] is True and summary["iterations"] == 3
    exits = [e for e in events if e["event"] == "worker_exit"]
    assert exits[-1]["phase"] == "teardown"
    assert not any(e["event"] == "fault" and e["kind"] == "hang" for e in events)  # abandoned, not judged
    for pid in [e["pid"] for e in events if e["event"] == "worker_start"]:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


# -- item 3: a full disk ---------------------------------------------------------------------------

@pytest.mark.parametrize("filler", ["events", "engine_log"])
def test_a_full_disk_ends_the_run_readably(tmp_path, filler):
    """A 2 MiB tmpfs (in a private mount namespace: nothing to clean up) fills during the run,
    with events (long outputs) or with the engine's own log lines (written by the supervisor)."""
    if not shutil.which("unshare"):
        raise AssertionError("util-linux unshare is needed (apt-get install util-linux)")
    copy = tmp_path / "copy"
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"kind": "log", "every": 1, "lines": ["I/MNN chatty line " + "x" * 400] * 20}]
                               if filler == "engine_log" else []))
    script = ('mount -t tmpfs -o size=2m soak-full "$1" || exit 99; cd "$1"; '
              f'{sys.executable} -m soak run --engine test --iterations 1000000 --max-new-tokens 200 '
              f'--fault-plan {plan} --out "$1" --run-id full >"$2/stdout" 2>"$2/stderr"; echo $? >"$2/rc"; '
              'cp -r "$1/full" "$2/copy"')
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([*unshare, "sh", "-c", script, "sh", str(mnt), str(tmp_path)], timeout=300, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rc = int((tmp_path / "rc").read_text())
    err = (tmp_path / "stderr").read_text()
    assert rc == ExitCode.DISK_FULL == 13, err
    assert "Traceback" not in err and "is full" in err and "free space" in err
    summary, events = _ended(copy, "disk_full")
    assert summary["iterations"] > 10
    (error,) = [e for e in events if e["event"] == "error"]
    assert error["kind"] == "disk" and error["exit_code"] == 13
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["ended"]

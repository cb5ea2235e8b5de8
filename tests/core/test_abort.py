"""Runner.abort from another thread (what several devices' runs get on SIGTERM, since only the
main thread takes signals): the call in flight is left at once, even a hung one, the worker is
ended within the abort grace, and run_end (terminated, aborted) and the summary are written."""

from __future__ import annotations

import json
import threading
import time

import pytest

from soak.loop.config import RunConfig
from soak.loop.runner import Runner
from soak.loop.session import Timeouts
from soak.run_folder import read_events


def _runner(tmp_path, plan):
    cfg = RunConfig(engine="test", fault_plan=plan, iterations=100000, out_dir=str(tmp_path), run_id="a",
                    test_engine={"decode_tok_per_s": 20000, "prefill_tok_per_s": 200000}, quiet=True,
                    timeouts=Timeouts(start=30, load=30, respond=600, reset=600, teardown=300))
    return Runner(cfg)


@pytest.mark.parametrize("where", ["running", "hung", "before_start"])
def test_abort_from_another_thread_ends_the_run_with_its_summary(tmp_path, where):
    plan = [{"kind": "hang", "at": [4], "seconds": 600}] if where == "hung" else []
    runner = _runner(tmp_path, plan)
    if where == "before_start":
        runner.abort(terminated=True)
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=runner.run()), daemon=True)
    thread.start()
    events_file = tmp_path / "a" / "events.jsonl"
    if where != "before_start":
        deadline = time.monotonic() + 60
        needle = '"i": 3,' if where == "hung" else '"event": "iteration"'
        while time.monotonic() < deadline and not (events_file.exists() and needle in events_file.read_text()):
            time.sleep(0.05)
        time.sleep(0.5)  # hung: into the hang at iteration 4 (600 s; teardown 300 s)
        started = time.monotonic()
        runner.abort(terminated=True)
        runner.abort(terminated=False)  # a second one changes nothing
    else:
        started = time.monotonic()
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - started < 10  # the worker got the 2 s abort grace, not 300 s
    result = done["result"]
    assert result.exit_code == 143
    events = list(read_events(result.run_dir))
    end = events[-1]
    assert end["event"] == "run_end" and end["reason"] == "terminated" and end["aborted"] is True
    assert [e["seq"] for e in events] == list(range(len(events)))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["end_reason"] == "terminated"
    assert summary["iterations"] == sum(e["event"] == "iteration" for e in events)
    assert not any(e["event"] == "fault" for e in events)  # the abandoned call is not judged
    if where == "hung":
        assert summary["iterations"] == 4
    if where == "before_start":
        assert summary["iterations"] == 0 and not any(e["event"] == "worker_start" for e in events)


def test_sigterm_right_after_an_iteration_event_still_counts_it(tmp_path, monkeypatch):
    """SIGTERM whose handler runs just after an iteration's event is written (and before the run
    counted it): the iteration's record finishes first, so summary.json counts every iteration
    event (a CI run once summed 9 against 10 events)."""
    import os
    import signal

    from soak.events import EventLog

    real_emit = EventLog.emit
    seen = {"n": 0}

    def emit(self, event, **fields):
        real_emit(self, event, **fields)
        if event == "iteration":
            seen["n"] += 1
            if seen["n"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode

    monkeypatch.setattr(EventLog, "emit", emit)
    result = _runner(tmp_path, []).run()  # the main thread: the runner takes the signals itself
    assert result.exit_code == 143
    events = list(read_events(result.run_dir))
    assert events[-1]["event"] == "run_end" and events[-1]["reason"] == "terminated"
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert sum(e["event"] == "iteration" for e in events) == 3 == summary["iterations"]
    assert events[-1]["iterations"] == 3

import sys
from pathlib import Path

import pytest

from soak.run_folder import read_events
from soak.loop.config import RunConfig
from soak.loop.runner import run_soak
from soak.loop.session import Timeouts

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def soak_run(tmp_path):
    """Run a soak on the test engine in-process (the worker is a real subprocess)."""
    counter = {"n": 0}

    def run(plan=None, iterations=20, **kw):
        counter["n"] += 1
        engine = kw.pop("test_engine", {"decode_tok_per_s": 20000, "prefill_tok_per_s": 200000})
        timeouts = kw.pop("timeouts", Timeouts(start=30, load=30, respond=3, reset=5))
        cfg = RunConfig(engine="test", fault_plan=plan or [], iterations=iterations, out_dir=str(tmp_path),
                        run_id=f"run{counter['n']}", test_engine=engine, timeouts=timeouts, quiet=True,
                        memory_interval_s=0.2, max_new_tokens=kw.pop("max_new_tokens", 16), **kw)
        result = run_soak(cfg)
        events = list(read_events(result.run_dir))
        return result, events

    return run


"""The interposer's table of live objects is sized by what is alive, not by what came and went:
an application that asks for an event on every launch and releases it (millions per soak) must
not grow the soaked process's memory through soak.  Measured over a do-nothing driver
(native/interposer/testprog/stub_cl.c), so only the interposer's own memory and time count."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from soak.cl.trace import read_stats



def launch(stub, cl_build, tmp: Path, n: int, mode: str) -> tuple[dict, dict, int]:
    """Run the loop through the interposer: (its output, the stats file, its peak RSS in KiB)."""
    driver, loop = stub
    tmp.mkdir()
    env = dict(os.environ, SOAK_CL_REAL_LIB=str(driver), SOAK_CL_STATS=str(tmp / "s.%p.stats"),
               SOAK_CL_MEM_RECORDS="0")
    proc = subprocess.Popen([str(loop), str(cl_build.lib), str(n), mode, "5"], env=env, stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, out
    [stats_file] = tmp.glob("s.*.stats")
    return dict(line.split() for line in out.splitlines()), read_stats(stats_file), usage.ru_maxrss


def test_event_churn_keeps_the_table_small(stub, cl_build, tmp_path):
    """5 x 400,000 events created and released cost no more memory than 5 x 20,000 (before the
    table lost its tombstones it doubled each time dead slots filled half of it: +75 MB here)."""
    _, small_stats, small_rss = launch(stub, cl_build, tmp_path / "small", 20_000, "event")
    out, stats, rss = launch(stub, cl_build, tmp_path / "large", 400_000, "event")
    events = stats["objects"]["event"]
    assert int(out["launches"]) == 2_000_000
    assert events["created"] == events["released"] == 2_000_000 and events["live"] == 0
    assert events["peak_live"] == 1
    assert stats["untracked_releases"] == 0
    assert small_stats["objects"]["event"]["created"] == 100_000
    assert rss - small_rss < 4096, (small_rss, rss)


def test_objects_alive_stay_found_while_others_churn(stub, cl_build, tmp_path):
    """Every 97th event is held while the others come and go around it, then all are released:
    each release finds its object (no untracked release), so closing the gaps moved no entry out
    of its probe run."""
    _, stats, _ = launch(stub, cl_build, tmp_path / "keep", 100_000, "keep")
    events = stats["objects"]["event"]
    assert events["created"] == events["released"] == 500_000 and events["live"] == 0
    assert events["peak_live"] == 100_000 // 97 + 2  # the held ones and the one in flight
    assert stats["untracked_releases"] == 0

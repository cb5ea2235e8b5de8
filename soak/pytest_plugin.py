"""pytest plugin (entry point pytest11 `soak`): write a soak as a test.

    import pytest

    @pytest.mark.soak(demo=True, iterations=40)     # default options for soak_run in this test
    def test_engine_survives_a_soak(soak_run):
        result = soak_run()                          # soak.api.SoakRun, folder in tmp_path
        result.assert_gate("docs/policies/opencl-nightly.toml")

    def test_my_engine(soak_run):
        soak_run(engine="lib", engine_lib="build/libmy_engine.so", duration="10m").assert_gate()

`soak_run(**options)` takes the keyword options of soak.run (those of `soak run`); the
marker's options are the defaults.  Run folders go to tmp_path, or under
`--soak-out DIR` (one subfolder per test) to keep them for CI artifacts.
`-m soak` selects the soak tests, `-m "not soak"` leaves them out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("soak")
    group.addoption("--soak-out", metavar="DIR", default=None,
                    help="keep soak run folders under DIR/<test name>/ (default: the test's tmp_path)")


def pytest_configure(config):
    config.addinivalue_line("markers", "soak(**options): a soak test; options are soak_run's defaults "
                                       "(the keyword options of soak.run)")


@pytest.fixture
def soak_run(request, tmp_path):
    """Factory: soak_run(**options) -> soak.api.SoakRun (a finished run, gate it with assert_gate)."""
    from soak import api

    marker = request.node.get_closest_marker("soak")
    defaults = dict(marker.kwargs) if marker else {}
    keep = request.config.getoption("--soak-out")
    out = Path(keep) / re.sub(r"[^\w.-]+", "_", request.node.name) if keep else tmp_path / "soak"

    def run(**options):
        return api.run(**{"out": str(out), **defaults, **options})

    return run

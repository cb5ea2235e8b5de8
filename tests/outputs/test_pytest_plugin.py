"""The pytest plugin and the library API (issue 15): the README's example test runs here
through pytester, once passing a lenient policy and once failing the built-in gate with
the failed rules and the run folder in the message."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]

EXAMPLE = '''
import pytest

@pytest.mark.soak(demo=True, iterations=15)
def test_demo_soak_fails_the_default_gate(soak_run):
    result = soak_run()
    assert result.faults > 0 and result.seed == 0
    result.assert_gate()

@pytest.mark.soak(demo=True, iterations=15)
def test_demo_soak_passes_a_lenient_policy(soak_run, tmp_path):
    policy = tmp_path / "lenient.toml"
    policy.write_text("[gate]\\nname = 'lenient'\\nmin_iterations = 10\\n")
    result = soak_run(seed=3)
    verdict = result.assert_gate(str(policy))
    assert verdict.passed and "run.min_iterations" in [r.name for r in verdict.rules]
'''


def test_plugin_runs_the_readme_example(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # this checkout's soak, installed or not
    pytester.makepyfile(test_example=EXAMPLE)
    out_dir = pytester.path / "kept"
    from importlib.metadata import entry_points

    # installed, pytest loads it through the pytest11 entry point; from a bare checkout, name it
    installed = any(ep.name == "soak" for ep in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "soak.pytest_plugin"]
    result = pytester.runpytest_subprocess(*plugin, "--soak-out", str(out_dir), "-q")
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    assert "AssertionError: soak gate (built-in gate) failed for" in text
    assert "FAIL errors.severity.critical" in text
    kept = sorted(p.name for p in out_dir.iterdir())
    assert kept == ["test_demo_soak_fails_the_default_gate", "test_demo_soak_passes_a_lenient_policy"]


def test_import_soak_stays_cheap_and_the_api_is_lazy():
    import subprocess
    import sys

    code = "import sys, soak; print('soak.api' in sys.modules, callable(soak.run), 'soak.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "True", "True"]


def test_api_refuses_bad_options_with_a_soak_error():
    import soak
    from soak.errors import BadInput

    with pytest.raises(BadInput, match="iterations"):
        soak.run(iterations="many")
    with pytest.raises(BadInput, match="command-line options") as info:
        soak.run(demo=True, gate="policy.toml")
    assert "result.gate(policy)" in info.value.hint

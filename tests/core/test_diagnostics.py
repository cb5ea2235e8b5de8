"""soak's own diagnostics (soak/diagnostics.py, issue 22): one structlog configuration, readable
lines on a terminal, JSON lines for CI, never in events.jsonl; and no bare stderr print of a
diagnostic anywhere else in soak/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from coresupport import soak_cli
from soak import diagnostics
from soak.errors import BadInput
from soak.loop.session import Timeouts

SOAK = Path(__file__).resolve().parents[2] / "soak"

# a crash at iteration 2 and a hang at 5: the supervisor decides twice (the worker died; killed
# at the call timeout) and the ladder restarts it each time
PLAN = [{"kind": "crash", "at": [2]}, {"kind": "hang", "at": [5], "seconds": 600}]
FAST = Timeouts(start=30, load=30, respond=1, reset=5)


@pytest.fixture
def configured():
    """configure(...) for the test, then back to the environment's (or the default) setting."""
    yield diagnostics.configure
    diagnostics.configure()


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# -- the configuration (fast) ----------------------------------------------------------
@pytest.mark.parametrize("fmt, level", [("json", "debug"), ("console", "info")])
def test_one_line_per_diagnostic_in_each_format(configured, capsys, fmt, level):
    configured(fmt, level)
    log = diagnostics.get_logger("soak.test")
    log.debug("killed the worker: no result within the call timeout", op="respond", limit_s=3.0)
    log.info("building native/test_engine (first use)", cache="/tmp/a b")
    log.warning("the catalog is empty\nsee --catalog")
    lines = _stderr_lines(capsys)
    if fmt == "json":
        objs = [json.loads(line) for line in lines]
        assert [(o["event"], o["level"]) for o in objs] == [
            ("killed the worker: no result within the call timeout", "debug"),
            ("building native/test_engine (first use)", "info"),
            ("the catalog is empty\nsee --catalog", "warning")]
        assert objs[0]["op"] == "respond" and objs[0]["limit_s"] == 3.0 and objs[0]["logger"] == "soak.test"
        assert all(o["timestamp"].endswith("Z") for o in objs)
    else:  # debug is below info: left out
        assert lines == ["soak: building native/test_engine (first use)  cache='/tmp/a b'",
                         "soak: warning: the catalog is empty", "see --catalog"]


def test_level_filters(configured, capsys):
    configured("console", "warning")
    log = diagnostics.get_logger("soak.test")
    log.info("a build note")
    log.error("a harness error", exit_code=8)
    assert _stderr_lines(capsys) == ["soak: error: a harness error  exit_code=8"]


def test_environment_picks_the_format_and_a_bad_name_is_bad_input(configured, capsys, monkeypatch):
    monkeypatch.setenv(diagnostics.ENV_FORMAT, "JSON")
    monkeypatch.setenv(diagnostics.ENV_LEVEL, "debug")
    configured()
    assert diagnostics.current() == ("json", "debug")
    monkeypatch.setenv(diagnostics.ENV_FORMAT, "xml")
    with pytest.raises(BadInput) as err:
        configured()
    assert "SOAK_LOG_FORMAT=xml" in err.value.message and "console, json" in err.value.hint


@pytest.mark.integration  # starts soak
def test_json_flag_on_the_command_line_makes_exit_errors_json_too():
    proc = soak_cli("--log-format", "json", "classify", "/nonexistent/run")
    assert proc.returncode == 3 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    obj = json.loads(line)
    assert obj["level"] == "error" and "does not exist" in obj["event"] and obj["exit_code"] == 3 and obj["hint"]
    proc = soak_cli("classify", "/nonexistent/run", env={diagnostics.ENV_FORMAT: "xml"})
    assert proc.returncode == 3 and proc.stderr.startswith("soak: error: SOAK_LOG_FORMAT=xml")


# -- a real run (integration: a worker crashes and hangs) ------------------------------
def test_json_run_diagnostics_are_json_lines_and_never_events(soak_run, configured, capsys):
    configured("json", "debug")
    result, events = soak_run(PLAN, iterations=8, timeouts=FAST)
    objs = [json.loads(line) for line in _stderr_lines(capsys)]  # every stderr line is one JSON object
    assert objs and all(isinstance(o["event"], str) and o["level"] in diagnostics.LEVELS for o in objs)
    said = [o["event"] for o in objs]
    assert "the worker died" in said and "killed the worker: no result within the call timeout" in said
    assert said.count("recovered by restart") == 2
    died = next(o for o in objs if o["event"] == "the worker died")
    assert died["logger"] == "soak.worker.supervisor" and died["signal"] == "SIGSEGV"
    # the event log holds events only: none of the diagnostics, nothing in their shape
    raw = (Path(result.run_dir) / "events.jsonl").read_text()
    assert not any("level" in e or "logger" in e or "timestamp" in e for e in events)
    assert not any(text in raw for text in set(said))


def test_console_run_diagnostics_read_as_lines(soak_run, configured, capsys):
    configured("console", "debug")
    soak_run(PLAN, iterations=8, timeouts=FAST)
    lines = _stderr_lines(capsys)
    assert lines and all(line.startswith("soak: ") for line in lines)
    assert any(line.startswith("soak: the worker died  op=respond") and "signal=SIGSEGV" in line for line in lines)
    assert any(line.startswith("soak: killed the worker: no result within the call timeout  op=respond")
               for line in lines)


def test_default_level_keeps_the_supervisors_decisions_off_the_terminal(soak_run, configured, capsys):
    configured("console", "info")
    soak_run(PLAN, iterations=8, timeouts=FAST)
    assert _stderr_lines(capsys) == []


# -- no diagnostic around the configuration ---------------------------------------------
# Bare stderr prints that are a command's own people text, not diagnostics: "path::function": why.
# A diagnostic (a build note, a warning, a harness error, a supervisor decision) goes through
# soak.diagnostics.get_logger instead.
ALLOWED = {
    "soak/cli.py::_exit_message": "the exit message of a SoakError or Ctrl-C (console format)",
    "soak/commands/compare.py::run": "the comparison's variant lines and tables (--quiet silences them)",
    "soak/commands/replay.py::run": "the plan of the replay, before it runs",
    "soak/judges.py::judge_run": "the summary table at the end of a run",
    "soak/multi_device.py::_finish": "the combined table and each device's exit error",
}


def _dotted(node) -> str:
    """`a.b.c` for a name or an attribute chain, else ''."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    return ".".join([node.id, *reversed(parts)])


def _stderr_writes(path: Path) -> list[tuple[str, int, str]]:
    """(function, line, what) for each print(..., file=sys.stderr), sys.stderr.write(...),
    warnings.warn(...) and logging import in a module."""
    found, stack = [], []

    class Visit(ast.NodeVisitor):
        def visit_FunctionDef(self, node):
            stack.append(node.name)
            self.generic_visit(node)
            stack.pop()

        visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

        def visit_Call(self, node):
            func = _dotted(node.func)
            if func == "print" and any(k.arg == "file" and _dotted(k.value).endswith("stderr") for k in node.keywords):
                found.append((".".join(stack), node.lineno, "print(..., file=sys.stderr)"))
            elif func in ("sys.stderr.write", "warnings.warn"):
                found.append((".".join(stack), node.lineno, func))
            self.generic_visit(node)

        def visit_Import(self, node):
            if any(a.name == "logging" for a in node.names):
                found.append((".".join(stack), node.lineno, "import logging"))

        def visit_ImportFrom(self, node):
            if node.module == "logging":
                found.append((".".join(stack), node.lineno, "from logging import"))

    Visit().visit(ast.parse(path.read_text(), str(path)))
    return found


def test_no_bare_stderr_diagnostic_outside_the_allowed_places():
    bad = []
    for path in sorted(SOAK.rglob("*.py")):
        rel = path.relative_to(SOAK.parent).as_posix()
        if rel == "soak/diagnostics.py":
            continue
        for func, line, what in _stderr_writes(path):
            if f"{rel}::{func}" not in ALLOWED:
                bad.append(f"{rel}:{line} ({func or 'module'}): {what}")
    assert not bad, ("soak's own diagnostics go through soak.diagnostics (get_logger(__name__).info/warning/...); "
                     "a command's people text (a table, a report) may print to stderr if ALLOWED says why:\n  "
                     + "\n  ".join(bad))


def test_the_scan_sees_a_bare_stderr_print(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import sys\nimport warnings\n\nclass A:\n    def f(self):\n"
                      "        print('soak: building x', file=sys.stderr)\n        warnings.warn('w')\n")
    assert [(f, w) for f, _, w in _stderr_writes(module)] == [("A.f", "print(..., file=sys.stderr)"),
                                                               ("A.f", "warnings.warn")]

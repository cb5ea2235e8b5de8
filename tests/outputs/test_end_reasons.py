"""One table of run_end reasons (soak.end_reasons): the gate and merge conclude the same from
each, and the loop writes no reason the table lacks."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from soak import end_reasons
from soak.analysis.loaded_run import RunFolder
from soak.errors import ExitCode
from soak.outputs import merge
from soak.outputs.gate import completeness

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "soak"


def _ended_by(run: Path, reason, asked=None) -> Path:
    """The run with run_end.reason (and summary.json's end_reason) set to `reason`; None: no run_end."""
    path = run / "events.jsonl"
    lines = path.read_text().splitlines()
    end = json.loads(lines[-1])
    assert end["event"] == "run_end"
    end["reason"] = reason
    path.write_text("\n".join(lines[:-1] + ([json.dumps(end)] if reason is not None else [])) + "\n")
    summary = json.loads((run / "summary.json").read_text())
    summary["end_reason"] = reason
    (run / "summary.json").write_text(json.dumps(summary))
    if asked is not None:
        m = json.loads((run / "manifest.json").read_text())
        m["config"] = {**(m.get("config") or {}), "iterations": asked}
        (run / "manifest.json").write_text(json.dumps(m))
    return run


def _gate(run: Path) -> bool:
    return completeness(RunFolder(run)).passed


def _merge(run: Path) -> bool:
    rec = merge.read_run(run)[0]
    assert rec.gate is None  # no gate results: merge judges the end itself (run.ended)
    (case,) = [c for c in rec.cases if c.name == "run.ended"]
    return case.passed


CASES = [(r, None) for r in end_reasons.REASONS] + [
    (None, None),                       # no run_end: killed
    ("stopped-by-a-newer-soak", None),  # a reason this soak does not know
    ("iterations", 500),                # fewer done than asked
    ("workload", 500),
    ("duration", 500),                  # a duration ends the run whatever the count
]


@pytest.mark.parametrize("reason, asked", CASES)
def test_gate_and_merge_agree_on_every_reason(make_run, reason, asked):
    run = _ended_by(make_run(f"end-{reason}-{asked}", iterations=30), reason, asked)
    want = end_reasons.conclude(reason, 30, asked).passed
    assert (_gate(run), _merge(run)) == (want, want)


@pytest.mark.parametrize("reason", ["terminated", "disk_full", "harness_error", "interrupted"])
def test_a_run_stopped_from_outside_never_passes(make_run, reason):
    """These passed `soak merge` before the table (only unrecoverable, engine_error and fail_fast failed)."""
    run = _ended_by(make_run(f"outside-{reason}", iterations=30), reason)
    assert not _merge(run) and not _gate(run)
    assert end_reasons.conclude(reason, 30).conclusion == end_reasons.INCOMPLETE


def test_the_workload_running_out_passes_both(make_run):
    """`workload` (the turns ran out) was 'no known reason' to the gate, a pass to merge."""
    run = _ended_by(make_run("workload", iterations=30), "workload")
    assert _gate(run) and _merge(run)


def test_every_row_is_well_formed():
    for name, row in end_reasons.REASONS.items():
        assert row.name == name and row.conclusion in end_reasons.CONCLUSIONS and row.meaning
        if row.conclusion == end_reasons.PASS:
            assert row.exit_code == ExitCode.OK, name
        elif row.exit_code is not None:
            assert row.exit_code != ExitCode.OK, name
    for name in ("ITERATIONS", "DURATION", "WORKLOAD", "FAIL_FAST", "UNRECOVERABLE", "ENGINE_ERROR",
                 "INTERRUPTED", "TERMINATED", "HARNESS_ERROR", "DISK_FULL"):
        assert getattr(end_reasons, name) in end_reasons.REASONS, name


def _stop_reason_writes(tree: ast.AST) -> list[ast.AST]:
    """The values assigned to `<x>.stop_reason` (through chained assignments and conditionals)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "stop_reason"
                                                for t in node.targets):
            stack = [node.value]
            while stack:
                v = stack.pop()
                if isinstance(v, ast.IfExp):
                    stack += [v.body, v.orelse]
                else:
                    out.append(v)
    return out


def _run_end_reasons(tree: ast.AST) -> list[ast.AST]:
    """The reason= of every emit("run_end", ...) and the end_reason of every dict literal."""
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == "run_end"):
            out += [k.value for k in node.keywords if k.arg == "reason"]
        elif isinstance(node, ast.Dict):
            out += [v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and k.value == "end_reason"]
    return out


def test_the_runner_writes_only_reasons_of_the_table():
    """Every `stop_reason = ...` in soak/ (the loop; multi_device writes none of its own) is a
    name of soak.end_reasons, or a reason set earlier; run_end and summary.json write stop_reason."""
    values, written = [], []
    for path in sorted(SOAK.rglob("*.py")):
        tree = ast.parse(path.read_text())
        values += [(path.name, v) for v in _stop_reason_writes(tree)]
        if path.parent.name == "loop" or path.name == "multi_device.py":  # the producers (readers echo them)
            written += [(path.name, v) for v in _run_end_reasons(tree)]
    assert len(values) >= 10 and len(written) >= 2
    for where, v in written:
        assert isinstance(v, ast.Attribute) and v.attr == "stop_reason", (where, ast.unparse(v))
    for where, v in values:
        if isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and v.value.id == "ends":
            assert getattr(end_reasons, v.attr) in end_reasons.REASONS, (where, v.attr)
        else:  # a reason kept aside (the abort's), never a literal
            assert isinstance(v, ast.Attribute) and v.attr == "_abort_reason", (where, ast.unparse(v))


def test_no_reason_literal_outside_the_table():
    """A second copy of the reason set (a tuple or set of two or more reason names) fails."""
    names = set(end_reasons.REASONS)
    found = []
    for path in SOAK.rglob("*.py"):
        if path.name == "end_reasons.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.Set, ast.List)) or isinstance(node, ast.Dict):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                lits = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
                if len(lits & names) >= 2 and lits & (names - {"iterations", "duration", "workload"}):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Call)
                    and any(isinstance(c, ast.Constant) and c.value in names - {"iterations", "duration", "workload"}
                            for c in node.comparators)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found

"""soak/run_folder/ is the one contract of a run folder: the only code that
spells one of its file names, and the one reader of its manifest (with the
schema check) for every command that reads one."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from soak import run_folder
from soak.cli import main
from soak.errors import BadInput, ExitCode

from test_run_folder import _write_run

REPO = Path(__file__).resolve().parents[2]

# every file of a run folder (docs/ARCHITECTURE.md's table), plus merge's table and the interposer's files
RUN_FOLDER_FILES = ("events.jsonl", "manifest.json", "summary.json", "verdicts.json", "classification.json",
                    "gate.json", "gate-junit.xml", "engine.log", "run.lock", ".soak-reserve", "test_engine.json",
                    "merge.json", "cl_trace.jsonl", "cl_trace.%p.stats")
_LITERAL = re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in RUN_FOLDER_FILES) + r"|cl_trace\.)")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def test_the_run_folder_package_declares_every_file_name():
    for name in RUN_FOLDER_FILES:
        assert name in run_folder.FILE_NAMES, name


def test_no_run_folder_file_name_is_spelt_outside_soak_run_folder():
    """A string literal (docstrings and comments aside: prose) in soak/ that
    names a run-folder file is a second copy of the contract: use the names
    of soak.run_folder."""
    hits = []
    for path in sorted((REPO / "soak").rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[:2] == ("soak", "run_folder"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                hits += [f"{rel}:{node.lineno}: {m.group(1)!r}" for m in _LITERAL.finditer(node.value)]
    assert not hits, "run-folder file names spelt outside soak/run_folder/:\n" + "\n".join(sorted(set(hits)))


# --- every reader of a manifest checks its schema ----------------------------------

@pytest.fixture
def newer(tmp_path) -> Path:
    """A classified run folder whose manifest a newer major schema wrote (its events are fine)."""
    run = tmp_path / "newer"
    _write_run(run)
    assert main(["classify", str(run), "--json"]) == ExitCode.OK  # classification.json, as a run leaves it
    m = json.loads((run / run_folder.MANIFEST).read_text())
    m["schema"] = f"{run_folder.SCHEMA_MAJOR + 1}.0"
    (run / run_folder.MANIFEST).write_text(json.dumps(m))
    return run


def _compare(run: Path, tmp_path: Path) -> int:
    from soak.commands.compare import summarize_run

    try:
        summarize_run(run)
    except BadInput as exc:
        return exc.exit_code
    return ExitCode.OK


def _classify_log_folder(run: Path, tmp_path: Path) -> int:
    """A folder the classifier reads without events (an engine log and a manifest)."""
    folder = tmp_path / "logs_only"
    folder.mkdir()
    (folder / run_folder.ENGINE_LOG).write_text("I/MNN: load\nE/MNN: boom\n")
    (folder / run_folder.MANIFEST).write_bytes((run / run_folder.MANIFEST).read_bytes())
    return main(["classify", str(folder), "--json"])


COMMANDS = {
    "status": lambda run, tmp: main(["status", str(run), "--json"]),
    "compare": _compare,
    "gate": lambda run, tmp: main(["gate", str(run), "--out", str(tmp / "g.json")]),
    "bundle": lambda run, tmp: main(["bundle", str(run), "-o", str(tmp / "b.tar.gz")]),
    "classify": lambda run, tmp: main(["classify", str(run), "--json"]),
    "classify-engine-log": _classify_log_folder,
    "report": lambda run, tmp: (pytest.importorskip("matplotlib"),
                                main(["report", str(run), "-o", str(tmp / "r.html")]))[1],
    "replay": lambda run, tmp: main(["replay", str(run), "--iteration", "0", "--dry-run"]),
    "history-add": lambda run, tmp: main(["history", "--db", str(tmp / "h.sqlite"), "add", str(run)]),
    "merge": lambda run, tmp: main(["merge", str(run), "-o", str(tmp / "night")]),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_that_reads_a_manifest_refuses_a_newer_major_schema(command, newer, tmp_path, capsys):
    code = COMMANDS[command](newer, tmp_path)
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT, (command, code, err[-2000:])
    if command != "compare":
        assert "upgrade soak" in err and "Traceback" not in err


def test_the_manifest_reader(tmp_path):
    run = tmp_path / "r"
    _write_run(run)
    assert run_folder.read_manifest(run)["run_id"] == "r"
    assert run_folder.read_manifest(tmp_path) is None  # none: the caller decides
    (run / run_folder.MANIFEST).write_text("[1, 2]")
    with pytest.raises(run_folder.DamagedFile, match="JSON object"):
        run_folder.read_manifest(run)
    (run / run_folder.MANIFEST).write_text('{"schema": "9.0"}')
    with pytest.raises(BadInput, match="schema 9.0") as exc:
        run_folder.read_manifest(run)
    assert not isinstance(exc.value, run_folder.DamagedFile)  # lenient readers skip damage, never a newer schema

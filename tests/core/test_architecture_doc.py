"""docs/ARCHITECTURE.md's Layout table is the one list of modules (issue 22).

Every module under soak/ has exactly one row there (a package's `__init__.py` only when it
does more than hold a docstring), every path in the table exists, the soak/ rows follow the
order of the Layers table (read by test_layers, the one copy of that order), and every
component folder of native/ has one row.  A new, renamed or removed module fails here,
naming it and where its row goes.  Reads files only.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

from test_layers import layer_rank, read_layers, unit_of

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
WHERE = "docs/ARCHITECTURE.md's Layout table (## Layout)"


def layout_rows(doc: Path = DOC) -> list[tuple[int, str]]:
    """(line number, first cell) of every body row of the table under "## Layout"."""
    text = doc.read_text(encoding="utf-8")
    m = re.search(r"^## Layout\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"{doc}: no '## Layout' section"
    first = text[:m.start(1)].count("\n") + 1
    rows = []
    for i, line in enumerate(m.group(1).splitlines()):
        if not line.startswith("|"):
            continue
        cell = line.strip().strip("|").split("|")[0].strip()
        if cell == "path" or set(cell) <= set("-: "):
            continue
        rows.append((first + i, cell))
    assert rows, f"{doc}: the Layout section has no table"
    return rows


def table_paths(rows: list[tuple[int, str]]) -> tuple[list[str], list[str]]:
    """The paths of the first column, and a problem for each cell that is not one `path`."""
    paths, problems = [], []
    for line, cell in rows:
        m = re.fullmatch(r"`([^`\s]+)`", cell)
        if m:
            paths.append(m.group(1).rstrip("/"))
        else:
            problems.append(f"docs/ARCHITECTURE.md:{line}: the Layout table's first column holds {cell!r}: "
                            "one path in backticks per row (one module, or one native/ folder)")
    return paths, problems


def does_something(init: Path) -> bool:
    """An `__init__.py` with more than a docstring (names, re-exports, code)."""
    body = ast.parse(init.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return bool(body)


def soak_modules(root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(modules that need a row, docstring-only __init__.py files that get none), as paths from root."""
    listed, bare = set(), set()
    for path in sorted((root / "soak").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in path.parts:
            continue
        if path.name == "__init__.py" and not does_something(path):
            bare.add(rel)
        else:
            listed.add(rel)
    return listed, bare


def native_folders(root: Path = ROOT) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "native").iterdir() if p.is_dir()}


def module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layout_problems(doc: Path = DOC, root: Path = ROOT) -> list[str]:
    paths, out = table_paths(layout_rows(doc))
    modules, bare = soak_modules(root)
    counts = Counter(paths)
    out += [f"{m} is in no row of {WHERE}: add the row `| `{m}` | its one job |` among the rows of "
            f"{Path(m).parent.as_posix()}/ (packages in the order of the Layers table)"
            for m in sorted(modules - set(counts))]
    out += [f"{WHERE} names {p} {n} times; keep one row" for p, n in sorted(counts.items()) if n > 1]
    out += [f"{WHERE} names {p}, which does not exist (renamed or removed? fix or drop its row)"
            for p in sorted(counts) if not (root / p).exists()]
    out += [f"{WHERE} names {p}, which holds only a docstring: drop its row (an __init__.py has a row "
            "only when it does something)" for p in sorted(set(counts) & bare)]
    out += [f"{WHERE} names {p}: only modules under soak/ and folders or files under native/ belong there"
            for p in sorted(counts) if (root / p).exists() and not (
                p.startswith("native/") or (p.startswith("soak/") and p.endswith(".py")))]
    for folder in sorted(native_folders(root)):
        n = sum(1 for p in paths if p == folder or p.startswith(folder + "/"))
        if n != 1:
            out.append(f"{WHERE} has {n} rows for {folder}/; give each native/ component folder one row")
    rank = layer_rank(read_layers(doc))
    last = None
    for p in paths:
        if not (p.startswith("soak/") and p.endswith(".py")) or p not in modules:
            continue
        unit = unit_of(module_name(p))
        if unit not in rank:
            continue                      # test_layers names a unit missing from the Layers table
        if last is not None and rank[unit] > rank[last[1]]:
            out.append(f"{WHERE}: {p} (`{unit}`) comes after {last[0]} (`{last[1]}`), but `{unit}` is a higher "
                       "row of the Layers table: keep the rows in the Layers table's order")
        last = (p, unit)
    return out


def test_layout_table_lists_every_module_once():
    problems = layout_problems()
    assert not problems, "\n".join(problems)


def _tree(tmp_path: Path, layout: list[str]) -> Path:
    """A small project: soak/ with a few modules, native/ with one folder, and its doc."""
    for rel, text in {"soak/__init__.py": "__version__ = '1'\n", "soak/errors.py": "",
                      "soak/cli.py": "", "soak/loop/__init__.py": '"""The loop."""\n',
                      "soak/loop/runner.py": "", "native/crash/soak_crash.c": ""}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    doc = tmp_path / "ARCHITECTURE.md"
    doc.write_text("## Layout\n\n| path | job |\n|---|---|\n" + "".join(f"| {c} | x |\n" for c in layout)
                   + "\n## Layers\n\n| layer | packages | job |\n|---|---|---|\n| front | `cli` | x |\n"
                   "| loop | `loop` | x |\n| base | `soak`, `errors` | x |\n\n## Next\n")
    return doc


GOOD = ["`native/crash/`", "`soak/cli.py`", "`soak/loop/runner.py`", "`soak/__init__.py`", "`soak/errors.py`"]


def test_a_complete_table_passes(tmp_path):
    assert layout_problems(_tree(tmp_path, GOOD), tmp_path) == []


def test_a_new_module_is_named_with_where_to_add_it(tmp_path):
    doc = _tree(tmp_path, GOOD)
    (tmp_path / "soak/loop/repro.py").write_text("")
    [problem] = layout_problems(doc, tmp_path)
    assert problem.startswith("soak/loop/repro.py is in no row of docs/ARCHITECTURE.md's Layout table")
    assert "add the row `| `soak/loop/repro.py` | its one job |` among the rows of soak/loop/" in problem


def test_a_renamed_module_fails_both_ways(tmp_path):
    doc = _tree(tmp_path, GOOD)
    (tmp_path / "soak/loop/runner.py").rename(tmp_path / "soak/loop/producer.py")
    problems = "\n".join(layout_problems(doc, tmp_path))
    assert "soak/loop/producer.py is in no row" in problems
    assert "soak/loop/runner.py, which does not exist" in problems


def test_twice_out_of_order_bare_init_and_two_paths_in_a_cell_fail(tmp_path):
    rows = ["`native/crash/`", "`soak/loop/runner.py`", "`soak/cli.py`", "`soak/cli.py`", "`soak/loop/__init__.py`",
            "`soak/__init__.py`, `soak/errors.py`"]
    problems = "\n".join(layout_problems(_tree(tmp_path, rows), tmp_path))
    assert "names soak/cli.py 2 times" in problems
    assert "soak/cli.py (`cli`) comes after soak/loop/runner.py" in problems
    assert "soak/loop/__init__.py, which holds only a docstring" in problems
    assert "one path in backticks per row" in problems
    assert "soak/__init__.py is in no row" in problems


def test_every_native_folder_has_one_row(tmp_path):
    doc = _tree(tmp_path, GOOD)
    (tmp_path / "native/oracle").mkdir()
    assert layout_problems(doc, tmp_path) == [f"{WHERE} has 0 rows for native/oracle/; "
                                              "give each native/ component folder one row"]

"""The import scan: one-way layers, no package cycle, a loop that only produces,
no private module reached from another package (issue 22).

Every import statement under soak/ is read with `ast` (module level, inside
functions, under `if TYPE_CHECKING:` alike: a lazy or annotation-only import is
still a dependency).  The layer order is the "Layers" table of
docs/ARCHITECTURE.md, read here: it is written down once.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "soak"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

# (importer, imported) modules allowed against the layers, each with its reason
EXCEPTIONS = {
    ("soak", "soak.api"): "soak/__init__.py's lazy soak.run/gate/classify (docs/ARCHITECTURE.md, Layers)",
}
# what the loop must never import: it produces the run folder, the command judges it
JUDGES = ("soak.analysis", "soak.catalog", "soak.outputs")


# -- reading the code ---------------------------------------------------------------

def _modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package (a package is its __init__)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _package_of(module: str, modules: dict[str, Path]) -> str:
    """The package a module belongs to: itself for a package (__init__), else its parent."""
    return module if modules[module].name == "__init__.py" else module.rpartition(".")[0]


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The soak module an imported dotted name is (its longest prefix that is one)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


class Edge:
    def __init__(self, importer: str, imported: str, path: str, line: int, name: str | None = None):
        self.importer, self.imported, self.path, self.line = importer, imported, path, line  # path: soak/...
        self.name = name  # `from M import name` where name is not a module of M

    def __str__(self) -> str:
        what = f"{self.imported}.{self.name}" if self.name else self.imported
        return f"{self.path}:{self.line}: {self.importer} imports {what}"


def scan(package: Path = PACKAGE) -> tuple[dict[str, Path], list[Edge]]:
    """Every import of a soak module by a soak module."""
    modules = _modules(package)
    top = package.name
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        here = _package_of(module, modules)
        shown = path.relative_to(package.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(alias.name, modules)
                    if target and (alias.name == top or alias.name.startswith(top + ".")):
                        edges.append(Edge(module, target, shown, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source != top and not source.startswith(top + "."):
                    continue
                target = _resolve(source, modules)
                if target is None:
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in modules:  # `from soak.catalog import table`: the module soak.catalog.table
                        edges.append(Edge(module, sub, shown, node.lineno))
                    else:
                        edges.append(Edge(module, target, shown, node.lineno,
                                          None if alias.name == "*" else alias.name))
    return modules, edges


def unit_of(module: str) -> str:
    """Layer unit: the top-level package or module under soak/ ("soak" for soak/__init__.py)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


# -- reading the layer table ---------------------------------------------------------

def read_layers(doc: Path = DOC) -> list[tuple[str, list[str]]]:
    """The "## Layers" table of docs/ARCHITECTURE.md, top row (highest layer) first:
    [(layer name, [units])]."""
    text = doc.read_text(encoding="utf-8")
    m = re.search(r"^## Layers\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"{doc}: no '## Layers' section"
    rows = []
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= set("-: ") or cells[0] == "layer":
            continue
        rows.append((cells[0], re.findall(r"`([A-Za-z_][\w]*)`", cells[1])))
    assert rows, f"{doc}: the Layers section has no table"
    return rows


def layer_rank(layers: list[tuple[str, list[str]]]) -> dict[str, int]:
    """unit -> rank (0: the bottom row)."""
    rank = {}
    for i, (name, units) in enumerate(reversed(layers)):
        for u in units:
            assert u not in rank, f"docs/ARCHITECTURE.md Layers: `{u}` is in two rows"
            rank[u] = i
    return rank


# -- the checks ------------------------------------------------------------------------

def _once(edges: list[Edge]) -> list[Edge]:
    """One edge per import statement and imported module (`from m import a, b` is one line)."""
    seen, out = set(), []
    for e in edges:
        key = (e.path, e.line, e.imported)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _node(module: str, modules: dict[str, Path]) -> str:
    """A module's node in the package graph: its package (a folder of soak/); a module right under
    soak/ is a node of its own (soak/errors.py: soak.errors, not all of soak)."""
    pkg = _package_of(module, modules)
    return module if "." not in pkg else pkg


def package_cycles(modules: dict[str, Path], edges: list[Edge]) -> list[list[str]]:
    """Cycles between packages, each as the packages of one strongly connected component."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        if (e.importer, e.imported) in EXCEPTIONS:
            continue
        a, b = _node(e.importer, modules), _node(e.imported, modules)
        if a != b:
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:  # Tarjan (the graph is a few dozen nodes)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def cycle_problems(modules, edges) -> list[str]:
    out = []
    for comp in package_cycles(modules, edges):
        members = set(comp)
        out.append("package cycle: " + " <-> ".join(comp) + " (one import per pair of packages shown)")
        shown = set()
        for e in edges:
            pair = (_node(e.importer, modules), _node(e.imported, modules))
            if (pair[0] in members and pair[1] in members and pair[0] != pair[1] and pair not in shown
                    and (e.importer, e.imported) not in EXCEPTIONS):
                shown.add(pair)
                out.append(f"    {e}")
    return out


def producer_problems(edges) -> list[str]:
    return [f"{e}: the loop is a producer only (its command runs the judges, soak.judges)" for e in _once(edges)
            if e.importer.startswith("soak.loop") and any(e.imported == j or e.imported.startswith(j + ".")
                                                           for j in JUDGES)]


def private_problems(modules, edges) -> list[str]:
    """A private module (a `_` part of its dotted name) or a private name, imported from outside the
    package that holds it (its sub-packages count as inside; right under soak/, each module is a
    package of its own, as in the layer table)."""
    out, seen = [], set()
    for e in edges:
        private_name = bool(e.name and e.name.startswith("_") and not e.name.startswith("__"))
        key = (e.path, e.line, e.imported, e.name if private_name else None)
        if key in seen:
            continue
        seen.add(key)
        parts = e.imported.split(".")
        owner = None
        for i, part in enumerate(parts):
            if part.startswith("_") and not part.startswith("__"):
                owner = ".".join(parts[:i])
                break
        what = e.imported
        if owner is None and private_name:
            owner, what = _node(e.imported, modules), f"{e.imported}.{e.name}"
        if owner is None:
            continue
        here = _node(e.importer, modules)
        inside = here == owner or ("." in owner and here.startswith(owner + "."))
        if not inside:
            out.append(f"{e}: {what} is private to {owner}; use (or add) a public name there")
    return out


def layer_problems(modules, edges, layers) -> list[str]:
    rank = layer_rank(layers)
    units = {unit_of(m) for m in modules}
    out = [f"`{u}` (soak/{u}) is in no row of docs/ARCHITECTURE.md's Layers table" for u in sorted(units - set(rank))]
    out += [f"docs/ARCHITECTURE.md's Layers table names `{u}`, which soak/ does not have"
            for u in sorted(set(rank) - units)]
    names = {u: name for name, us in layers for u in us}
    for e in _once(edges):
        a, b = unit_of(e.importer), unit_of(e.imported)
        if a == b or a not in rank or b not in rank or (e.importer, e.imported) in EXCEPTIONS:
            continue
        if rank[b] >= rank[a]:
            how = "across its row" if rank[b] == rank[a] else "up"
            out.append(f"{e}: {how} the layers ({a}: {names[a]}; {b}: {names[b]})")
    return out


# -- tests -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def code():
    return scan()


def _fail(problems: list[str]) -> None:
    assert not problems, "\n" + "\n".join(problems)


def test_no_package_cycle(code):
    _fail(cycle_problems(*code))


def test_the_loop_never_imports_a_judge(code):
    _fail(producer_problems(code[1]))


def test_no_private_module_is_imported_from_another_package(code):
    _fail(private_problems(*code))


def test_imports_go_down_the_layer_table(code):
    _fail(layer_problems(*code, read_layers()))


# -- the scan itself, on made-up packages ------------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "soak" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "soak"


def test_the_scan_sees_every_kind_of_import(tmp_path):
    pkg = _tree(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "a/__init__.py": "",
        "a/_priv.py": "X = 1\n",
        "a/mod.py": "from . import _priv\nfrom ._priv import X\n",
        "a/sub/__init__.py": "from soak.a._priv import X\n",      # a sub-package: inside
        "_util.py": "",
        "tool.py": "from soak import _util\nfrom soak.errors import _hidden\n",  # right under soak/: outside
        "b/__init__.py": "",
        "b/user.py": ("import soak.errors\n"
                      "from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from soak.a.mod import thing\n"
                      "def f():\n    from soak.a import _priv\n    from soak.a.mod import _hidden\n"),
    })
    modules, edges = scan(pkg)
    got = {(e.importer, e.imported, e.name) for e in edges if e.importer == "soak.a.mod"}
    assert got == {("soak.a.mod", "soak.a._priv", None), ("soak.a.mod", "soak.a._priv", "X")}
    got = {(e.importer, e.imported, e.name) for e in edges if e.importer.startswith("soak.b")}
    assert got == {("soak.b.user", "soak.errors", None), ("soak.b.user", "soak.a.mod", "thing"),
                   ("soak.b.user", "soak.a._priv", None), ("soak.b.user", "soak.a.mod", "_hidden")}
    problems = sorted(p.split(":")[0] + ":" + p.split(":")[1] for p in private_problems(modules, edges))
    assert problems == ["soak/b/user.py:6", "soak/b/user.py:7", "soak/tool.py:1", "soak/tool.py:2"]


def test_a_cycle_an_upward_import_and_a_missing_unit_are_caught(tmp_path):
    pkg = _tree(tmp_path, {
        "__init__.py": "",
        "low.py": "from soak.high import thing\n",       # up, and a cycle with high
        "high/__init__.py": "",
        "high/thing.py": "import soak.low\n",
        "loop/__init__.py": "",
        "loop/runner.py": "def end():\n    from soak.analysis.verdicts import compute\n",
        "analysis/verdicts.py": "",
        "stray.py": "",
    })
    modules, edges = scan(pkg)
    assert any("soak.high <-> soak.low" in p for p in cycle_problems(modules, edges))
    assert len(producer_problems(edges)) == 1
    doc = tmp_path / "ARCHITECTURE.md"
    doc.write_text("## Layers\n\n| layer | packages | job |\n|---|---|---|\n| top | `high`, `analysis` | x |\n"
                   "| middle | `loop` | x |\n| bottom | `soak`, `low` | x |\n\n## Next\n")
    problems = layer_problems(modules, edges, read_layers(doc))
    assert any("soak/low.py:1" in p and "up the layers" in p for p in problems)
    assert any("soak/loop/runner.py:2" in p and "up the layers" in p for p in problems)
    assert any("`stray`" in p for p in problems)
    assert not any("soak/high/thing.py" in p for p in problems)  # high imports low: down

"""The catalog's match keys are one table (soak.catalog.match_keys): the schema, the validator
and the matcher read it, and none of them names a key of its own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from soak.catalog import _conditions as C
from soak.catalog import match_keys, schema
from soak.catalog._validate import Problems, condition, forget
from soak.catalog.match_keys import KEYS, MatchKey

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "soak"
OWNER = SOAK / "catalog" / "match_keys.py"
NAMES = set(KEYS)
LEAF_CLASSES = {n for n, obj in vars(C).items()
                if isinstance(obj, type) and issubclass(obj, C.Cond) and n not in ("Cond", "All", "Any_", "Keyed")}


def _sources(under: Path = SOAK):
    for path in sorted(under.rglob("*.py")):
        if path != OWNER:
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text())


def _declares(value: ast.AST) -> bool:
    """A dict value of a declaration (a doc text, a condition class), not data read at run time."""
    if isinstance(value, ast.Constant):
        return isinstance(value.value, str)
    if isinstance(value, (ast.BinOp, ast.JoinedStr)):
        return True
    return isinstance(value, (ast.Attribute, ast.Name)) and (getattr(value, "attr", None) or value.id) in LEAF_CLASSES


def test_no_second_table_of_match_keys():
    """A dict keyed by three or more key names whose values are docs or condition classes is a
    second declaration (the schema's MATCH_KEYS was one, the validator's boolean dispatch another).
    Dicts of event fields (many keys share an event field's name) hold data, not declarations."""
    copies = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                if len(keys & NAMES) >= 3 and all(_declares(v) for v in node.values):
                    copies.append(f"{rel}:{node.lineno}")
    assert copies == []


def _compared_names(func: ast.AST) -> dict[str, set[str]]:
    """variable -> the string constants it is compared with (==, in) inside one function."""
    out: dict[str, set[str]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name):
            for op, right in zip(node.ops, node.comparators):
                if not isinstance(op, (ast.Eq, ast.In)):
                    continue
                consts = right.elts if isinstance(right, (ast.Tuple, ast.List, ast.Set)) else [right]
                for c in consts:
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        out.setdefault(node.left.id, set()).add(c.value)
    return out


def test_no_dispatch_on_key_names():
    """A catalog function comparing one variable with two or more key names dispatches on match
    keys: that belongs to the table's rows (validation: value, matching: cond and fires_on)."""
    found = []
    for rel, tree in _sources(SOAK / "catalog"):
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for var, consts in _compared_names(func).items():
                    if len(consts & NAMES) >= 2:
                        found.append(f"{rel}:{func.lineno} {func.name}(): {var} vs {sorted(consts & NAMES)}")
    assert found == []


def test_conditions_and_matcher_name_no_key():
    """How a key matches is its row's cond (with the kind or field it reads as data); the
    conditions and the matcher hold no key name."""
    found = []
    for name in ("_conditions.py", "matcher.py"):
        for node in ast.walk(ast.parse((SOAK / "catalog" / name).read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                found.append(f"{name}:{node.lineno} {node.value!r}")
    assert found == []


def test_the_matcher_knows_no_leaf_condition():
    """Which kinds a leaf can fire on is its key's fires_on, not a list of condition classes."""
    text = (SOAK / "catalog" / "matcher.py").read_text()
    named = {n for n in LEAF_CLASSES if re.search(rf"\bC\.{n}\b", text)}
    assert named == set()


def test_the_schema_documents_the_table():
    assert schema.MATCH_KEYS == {k.name: k.doc for k in KEYS.values()}
    assert list(schema.MATCH_KEYS)[:4] == ["all", "any", "not", "run_has"]


def _compile(yaml_text: str):
    import yaml

    p = Problems("<test>", yaml_text)
    cond = condition(yaml.compose(yaml_text), "match", p)
    forget()
    return cond, p.items


def test_every_key_validates_compiles_and_rejects_a_bad_value():
    good = {"conditions": "[{kind: crash}]", "condition": "{kind: crash}", "strings": "x", "regex": "'a+'",
            "bool": "true", "window": "{min: 1}", "min_count": "{min: 2}", "items": None, "choices": None}
    bad = {"conditions": "[]", "condition": "3", "strings": "[]", "regex": "'('", "bool": "3",
           "window": "{max: x}", "min_count": "{max: 2}", "items": "[{a: 1}]", "choices": "nope-not-a-choice"}
    for row in KEYS.values():
        value = good[row.value.type]
        if row.value.type == "choices":
            value = row.value.choices[0]
        elif row.value.type == "items":
            value = {"cl_code": "-36", "signal": "SIGSEGV", "exit_code": "3", "status": "TIMEOUT"}[row.name]
        cond, problems = _compile(f"{{{row.name}: {value}}}")
        assert problems == [] and cond is not None, (row.name, problems)
        if row.combinator:
            assert not isinstance(cond, C.Keyed)
        else:
            assert isinstance(cond, C.Keyed) and cond.key == row.name, row.name
        cond, problems = _compile(f"{{{row.name}: {bad[row.value.type]}}}")
        assert cond is None and problems and f"match.{row.name}" in problems[0], (row.name, problems)


def test_unknown_key_lists_the_table():
    cond, problems = _compile("{cl_cod: -36}")
    assert cond is None and "did you mean 'cl_code'?" in problems[0]
    assert "allowed: " + ", ".join(KEYS) in problems[0]


def test_a_new_row_is_all_it_takes(monkeypatch):
    """One row drives validation and matching: a key added to the table alone validates,
    compiles and is indexed under the kinds it can fire on."""
    from soak.catalog.matcher import possible_kinds

    row = MatchKey("api_regex", "regex over the OpenCL API name", match_keys.REGEX,
                   lambda rx: C.InfoRegex(rx), lambda rx: frozenset({"cl_call_error"}))
    monkeypatch.setitem(KEYS, row.name, row)
    cond, problems = _compile("{api_regex: '^clEnqueue'}")
    assert problems == [] and isinstance(cond, C.Keyed)
    assert possible_kinds(cond) == frozenset({"cl_call_error"})
    cond, _ = _compile("{all: [{api_regex: x}, {kind: [cl_call_error, crash]}]}")
    assert possible_kinds(cond) == frozenset({"cl_call_error"})


@pytest.mark.parametrize("text, kinds", [
    ("{hang: true}", {"hang"}),
    ("{hang: false}", None),
    ("{signal: SIGSEGV}", "signal"),
    ("{any: [{injected: true}, {cpu_fallback: true}]}", {"cl_call_error", "cpu_fallback"}),
    ("{not: {kind: crash}}", None),
])
def test_fires_on_indexes_as_before(text, kinds):
    from soak.catalog.matcher import possible_kinds
    from soak.fault_kinds import FAULT_KINDS, with_field

    cond, problems = _compile(text)
    assert problems == []
    want = (frozenset(FAULT_KINDS) if kinds is None else with_field(kinds) if isinstance(kinds, str)
            else frozenset(kinds))
    assert possible_kinds(cond) == want

"""Check one YAML document (as PyYAML nodes, which keep line numbers) against
the schema in soak.catalog.schema and build Entry objects.

Every problem is recorded as `file:line: what is wrong`; nothing stops at the
first one, so `soak catalog validate` lists them all.
"""

from __future__ import annotations

import difflib
import re

import yaml

from soak.catalog import _conditions as C
from soak.catalog import schema as S
from soak.catalog._clcodes import parse_code
from soak.catalog.match_keys import KEYS, Value

_constructor = yaml.constructor.SafeConstructor()


class Problems:
    def __init__(self, path: str, text: str = ""):
        self.path = path
        self.items: list[str] = []
        self.lines = text.splitlines()

    def add(self, node: yaml.Node, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.items.append(f"{self.path}:{line}: {message}")


def _scalar(node: yaml.Node):
    return _constructor.construct_object(node, deep=True)


def forget() -> None:
    """Drop the constructor's node cache after a file (it keys on nodes)."""
    _constructor.constructed_objects.clear()
    _constructor.recursive_objects.clear()


def _mapping(node, where: str, p: Problems) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
    """key -> (key node, value node); reports non-mappings and duplicate keys."""
    if not isinstance(node, yaml.MappingNode):
        p.add(node, f"{where} must be a mapping, not {_what(node)}")
        return None
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for knode, vnode in node.value:
        key = _scalar(knode) if isinstance(knode, yaml.ScalarNode) else None
        if not isinstance(key, str):
            p.add(knode, f"{where}: keys must be strings")
            continue
        if key in out:
            p.add(knode, f"{where}: duplicate key {key!r} (first at line {out[key][0].start_mark.line + 1})")
            continue
        out[key] = (knode, vnode)
    return out


def _what(node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = _scalar(node)
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def _unknown(knode, key: str, allowed, where: str, p: Problems) -> None:
    near = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    p.add(knode, f"{where}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _string(node, where, p, required=True, prose=False) -> str | None:
    if isinstance(node, yaml.ScalarNode):
        value = _scalar(node)
        if prose and node.style is None and _cut_by_comment(node, p):
            p.add(node, f"{where}: unquoted text is cut at ' #' (YAML starts a comment there); "
                        "quote the whole value")
            return None
        if isinstance(value, str) and (value.strip() or not required):
            return value
    p.add(node, f"{where} must be a non-empty string, not {_what(node)}")
    return None


def _cut_by_comment(node, p: Problems) -> bool:
    """A plain scalar followed on its line by ` #...`: `fixed_in: PR #3511`
    silently loses everything from ` #`."""
    line_no = node.end_mark.line
    if line_no >= len(p.lines):
        return False
    rest = p.lines[line_no][node.end_mark.column:]
    return rest.startswith(" ") and rest.lstrip().startswith("#")


def _list(node, where, p) -> list[yaml.Node] | None:
    """A list, or a single scalar standing for a one-item list."""
    if isinstance(node, yaml.SequenceNode):
        if not node.value:
            p.add(node, f"{where} must not be an empty list")
            return None
        return list(node.value)
    if isinstance(node, yaml.ScalarNode) and _scalar(node) is not None:
        return [node]
    p.add(node, f"{where} must be a value or a list of values, not {_what(node)}")
    return None


def _choices(node, where, p, allowed) -> frozenset[str] | None:
    items = _list(node, where, p)
    if items is None:
        return None
    out = set()
    for item in items:
        value = _scalar(item) if isinstance(item, yaml.ScalarNode) else None
        if not isinstance(value, str) or value.lower() not in allowed:
            p.add(item, f"{where}: {_what(item)} is not one of {', '.join(allowed)}")
            continue
        out.add(value.lower())
    return frozenset(out) if out else None


def _strings(node, where, p) -> frozenset[str] | None:
    items = _list(node, where, p)
    if items is None:
        return None
    out = set()
    for item in items:
        value = _scalar(item) if isinstance(item, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value:
            p.add(item, f"{where}: items must be strings, not {_what(item)}")
            continue
        out.add(value)
    return frozenset(out) if out else None


def _ints(node, where, p, parse, what) -> frozenset[int] | None:
    items = _list(node, where, p)
    if items is None:
        return None
    out = set()
    for item in items:
        value = parse(_scalar(item)) if isinstance(item, yaml.ScalarNode) else None
        if value is None:
            p.add(item, f"{where}: {_what(item)} is not {what}")
            continue
        out.add(value)
    return frozenset(out) if out else None


def _regex(node, where, p, flags=0) -> re.Pattern | None:
    text = _string(node, where, p)
    if text is None:
        return None
    try:
        return re.compile(text, flags)
    except re.error as exc:
        p.add(node, f"{where}: bad regex {text!r}: {exc}")
        return None


def _bool(node, where, p) -> bool | None:
    value = _scalar(node) if isinstance(node, yaml.ScalarNode) else None
    if not isinstance(value, bool):
        p.add(node, f"{where} must be true or false, not {_what(node)}")
        return None
    return value


def _window(node, where, p, parse=None) -> tuple | None:
    m = _mapping(node, where, p)
    if m is None:
        return None
    lo = hi = None
    for key, (knode, vnode) in m.items():
        if key not in ("min", "max"):
            _unknown(knode, key, ("min", "max"), where, p)
            continue
        raw = _scalar(vnode) if isinstance(vnode, yaml.ScalarNode) else None
        value = parse(raw) if parse else (raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None)
        if value is None:
            p.add(vnode, f"{where}.{key} must be a number{' or a size like 1.5B' if parse else ''}, not {_what(vnode)}")
            return None
        if key == "min":
            lo = value
        else:
            hi = value
    if lo is None and hi is None:
        p.add(node, f"{where} needs min and/or max")
        return None
    if lo is not None and hi is not None and lo > hi:
        p.add(node, f"{where}: min {lo} is greater than max {hi}")
        return None
    return (lo, hi)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def condition(node, where: str, p: Problems) -> C.Cond | None:
    """A mapping of MATCH_KEYS; its keys are ANDed."""
    m = _mapping(node, where, p)
    if m is None:
        return None
    if not m:
        p.add(node, f"{where} is empty: give at least one matcher")
        return None
    parts: list[C.Cond] = []
    bad = False
    for key, (knode, vnode) in m.items():
        w = f"{where}.{key}"
        cond = _leaf(key, knode, vnode, w, p)
        if cond is None:
            bad = True
        else:
            parts.append(cond)
    if bad:
        return None
    return parts[0] if len(parts) == 1 else C.All(tuple(parts))


def _leaf(key, knode, vnode, w, p) -> C.Cond | None:
    row = KEYS.get(key)
    if row is None:
        _unknown(knode, key, S.MATCH_KEYS, w.rsplit(".", 1)[0], p)
        return None
    v = _value(row.value, vnode, w, p)
    return None if v is None else row.compile(v)


def _value(value: Value, vnode, w, p):
    """A match key's value, read as its type (soak.catalog.match_keys.Value); None when invalid."""
    t = value.type
    if t == "conditions":
        if not isinstance(vnode, yaml.SequenceNode) or not vnode.value:
            p.add(vnode, f"{w} must be a non-empty list of conditions, not {_what(vnode)}")
            return None
        subs = [condition(n, f"{w}[{i}]", p) for i, n in enumerate(vnode.value)]
        return None if any(s is None for s in subs) else tuple(subs)
    if t == "condition":
        return condition(vnode, w, p)
    if t == "choices":
        return _choices(vnode, w, p, value.choices)
    if t == "strings":
        return _strings(vnode, w, p)
    if t == "items":
        return _ints(vnode, w, p, value.parse, value.what)
    if t == "regex":
        return _regex(vnode, w, p)
    if t == "bool":
        return _bool(vnode, w, p)
    if t == "window":
        return _window(vnode, w, p)
    if t == "min_count":
        v = _window(vnode, w, p)
        if v is None:
            return None
        if v[1] is not None or not isinstance(v[0], int):
            p.add(vnode, f"{w} takes only an integer min")
            return None
        return v[0]
    raise ValueError(f"match key value type {t!r} has no reader")  # a row of match_keys the validator lacks


def applies_to(node, where: str, p: Problems) -> S.AppliesTo | None:
    m = _mapping(node, where, p)
    if m is None:
        return None
    out: dict = {}
    ok = True
    for key, (knode, vnode) in m.items():
        w = f"{where}.{key}"
        if key == "model_params":
            v = _window(vnode, w, p, parse=S.parse_param_count)
        elif key in ("model_family", "gpu_vendor", "gpu_model"):
            v = _regex(vnode, w, p, re.IGNORECASE)
        elif key in ("backend", "backend_actual"):
            v = _choices(vnode, w, p, S.BACKENDS)
        elif key == "precision":
            v = _choices(vnode, w, p, S.PRECISIONS)
        elif key == "memory":
            v = _choices(vnode, w, p, S.MEMORY_MODES)
        elif key == "thread_num":
            v = _ints(vnode, w, p, _int, "an integer")
        elif key == "thread_num_mode":
            v = _choices(vnode, w, p, tuple(S.THREAD_NUM_BITS))
        elif key in ("driver_version", "mnn_version"):
            text = _scalar(vnode) if isinstance(vnode, yaml.ScalarNode) else None
            if isinstance(text, (int, float)) and not isinstance(text, bool):
                text = str(text)
            v = None
            if not isinstance(text, str):
                p.add(vnode, f"{w} must be a version spec string like '<3.1.4', not {_what(vnode)}")
            else:
                try:
                    v = S.parse_version_spec(text)
                except ValueError as exc:
                    p.add(vnode, f"{w}: {exc}")
        elif key == "os":
            v = _choices(vnode, w, p, S.OSES)
        else:
            _unknown(knode, key, S.APPLIES_KEYS, where, p)
            ok = False
            continue
        if v is None:
            ok = False
        else:
            out[key] = v
    return S.AppliesTo(**out) if ok else None


def benign(node, where: str, p: Problems) -> tuple[S.BenignProbe, ...] | None:
    items = _list(node, where, p)
    if items is None:
        return None
    out = []
    for n, item in enumerate(items):
        w = f"{where}[{n}]"
        m = _mapping(item, w, p)
        if m is None:
            continue
        vals: dict = {}
        ok = True
        for key, (knode, vnode) in m.items():
            if key == "api":
                v = _string(vnode, f"{w}.api", p)
            elif key == "code":
                v = _ints(vnode, f"{w}.code", p, parse_code, "a CL error code (number or CL_* name)")
                key = "codes"
            elif key == "param_name":
                v = _regex(vnode, f"{w}.param_name", p)
            elif key in ("vendor", "platform"):
                v = _regex(vnode, f"{w}.{key}", p, re.IGNORECASE)
            else:
                _unknown(knode, key, S.BENIGN_KEYS, w, p)
                ok = False
                continue
            if v is None:
                ok = False
            else:
                vals[key] = v
        for need in ("api", "codes"):
            if need not in vals and ok:
                p.add(item, f"{w}: missing required key {'code' if need == 'codes' else need!r}")
                ok = False
        if ok and "vendor" not in vals and "platform" not in vals:
            p.add(item, f"{w}: a benign probe names the vendor or platform it is benign on")
            ok = False
        if ok:
            out.append(S.BenignProbe(**vals))
    return tuple(out) if len(out) == len(items) else None


def remedy(node, where: str, p: Problems) -> S.Remedy | None:
    m = _mapping(node, where, p)
    if m is None:
        return None
    ok = True
    out: dict = {}
    for key, (knode, vnode) in m.items():
        w = f"{where}.{key}"
        if key in ("cause", "workaround", "fixed_in"):
            v = _string(vnode, w, p, prose=True)
        elif key == "references":
            items = _list(vnode, w, p)
            v = None
            if items is not None:
                refs = []
                for item in items:
                    s = _scalar(item) if isinstance(item, yaml.ScalarNode) else None
                    if not isinstance(s, str) or not re.match(r"^https?://\S+$", s):
                        p.add(item, f"{w}: {_what(item)} is not a URL")
                    else:
                        refs.append(s)
                v = tuple(refs) if len(refs) == len(items) else None
        else:
            _unknown(knode, key, S.REMEDY_KEYS, where, p)
            ok = False
            continue
        if v is None:
            ok = False
        else:
            out[key] = v
    if "cause" not in m:
        p.add(node, f"{where}: missing required key 'cause'")
        return None
    return S.Remedy(**out) if ok else None


def entry(node, p: Problems) -> S.Entry | None:
    m = _mapping(node, "entry", p)
    if m is None:
        return None
    where = "entry"
    if "id" in m:
        eid = _scalar(m["id"][1]) if isinstance(m["id"][1], yaml.ScalarNode) else None
        if isinstance(eid, str):
            where = f"entry {eid!r}"
    for key in S.REQUIRED_ENTRY_KEYS:
        if key not in m:
            p.add(node, f"{where}: missing required key {key!r}")
    values: dict = {}
    ok = all(k in m for k in S.REQUIRED_ENTRY_KEYS)
    for key, (knode, vnode) in m.items():
        w = f"{where}: {key}"
        if key == "id":
            v = _string(vnode, w, p)
            if v is not None and not S.ID_RE.match(v):
                p.add(vnode, f"{w} {v!r} must match {S.ID_RE.pattern}")
                v = None
        elif key in ("title", "description"):
            v = _string(vnode, w, p, prose=True)
        elif key == "severity":
            sev = _choices(vnode, w, p, S.SEVERITIES)
            v = None
            if sev is not None:
                if len(sev) != 1 or isinstance(vnode, yaml.SequenceNode):
                    p.add(vnode, f"{w} must be one value")
                else:
                    v = next(iter(sev))
        elif key == "reports":
            v = _strings(vnode, w, p)
            if v is not None:
                bad = sorted(r for r in v if not re.match(r"^https?://\S+$", r))
                if bad:
                    p.add(vnode, f"{w}: {bad} are not URLs of public reports (https://github.com/...)")
                    v = None
                else:
                    v = tuple(sorted(v))
        elif key == "benign":
            v = benign(vnode, w, p)
        elif key == "generic":
            v = _bool(vnode, w, p)
        elif key == "match":
            v = condition(vnode, f"{where}: match", p)
        elif key == "applies_to":
            v = applies_to(vnode, f"{where}: applies_to", p)
        elif key == "remedy":
            v = remedy(vnode, f"{where}: remedy", p)
        else:
            _unknown(knode, key, S.ENTRY_KEYS, where, p)
            ok = False
            continue
        if v is None:
            ok = False
        else:
            values[key] = v
    if not ok:
        return None
    applies = values.get("applies_to") or S.AppliesTo()
    spec = sum(1 for _ in C.leaves(values["match"])) + len(applies.constrained())
    return S.Entry(
        id=values["id"], title=values["title"], description=values["description"],
        severity=values["severity"], match=values["match"], applies_to=applies,
        remedy=values["remedy"], reports=values.get("reports", ()),
        generic=values.get("generic", False), benign=values.get("benign", ()),
        source=f"{p.path}:{node.start_mark.line + 1}",
        raw=_constructor.construct_object(node, deep=True), specificity=spec,
    )

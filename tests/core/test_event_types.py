"""The event-type registry (soak.run_folder.event_types) lists every event
soak writes with every field it writes: read from the code that writes them,
so an event or a field added without its row fails here.

Writers: `emit(...)` / `emit_event(...)` calls in soak/ (their keywords, and
the keys of a dict literal passed as `**name`), the fault kinds' fields
(soak.fault_kinds), the memory samples of the targets, the adb push stats,
and the interposer's records (native/interposer/*.c, through
soak.cl.trace_events and soak.cl.trace.fold_errors)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from soak import fault_kinds
from soak.cl import trace_events
from soak.run_folder import EVENT_TYPES, decode_line, sanitize

REPO = Path(__file__).resolve().parents[2]
SOAK = REPO / "soak"


def _tree(rel: str) -> ast.Module:
    return ast.parse((REPO / rel).read_text(encoding="utf-8"))


def _dict_keys(node: ast.AST) -> set[str]:
    """String keys a function puts in dicts: dict literals, d["k"] = ..., d.setdefault("k", ...)."""
    keys: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Dict):
            keys |= {k.value for k in n.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        elif isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store) and isinstance(n.slice, ast.Constant) \
                and isinstance(n.slice.value, str):
            keys.add(n.slice.value)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "setdefault" \
                and n.args and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str):
            keys.add(n.args[0].value)
    return keys


def _function(tree: ast.Module, name: str) -> ast.AST:
    return next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)


def _emits() -> dict[str, dict[str, set[str]]]:
    """{event: {field: {where}}} of every emit/emit_event call with a literal event name in soak/."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(SOAK.rglob("*.py")):
        rel = path.relative_to(REPO)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            local_dicts = {t.id: n.value for n in ast.walk(fn) if isinstance(n, ast.Assign)
                           and isinstance(n.value, ast.Dict) for t in n.targets if isinstance(t, ast.Name)}
            for call in ast.walk(fn):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr in ("emit", "emit_event") and call.args
                        and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
                    continue
                fields = found.setdefault(call.args[0].value, {})
                where = f"{rel}:{call.lineno}"
                for kw in call.keywords:
                    if kw.arg is not None:
                        fields.setdefault(kw.arg, set()).add(where)
                    elif isinstance(kw.value, ast.Name) and kw.value.id in local_dicts:
                        for k in _dict_keys(local_dicts[kw.value.id]):
                            fields.setdefault(k, set()).add(where)
    return found


def _interposer_records() -> dict[str, set[str]]:
    """{record type: fields} of the records the interposer writes (soak_json_begin ... soak_rec_write)."""
    records: dict[str, set[str]] = {}
    begin = re.compile(r'soak_json_begin\(&(\w+),[^;]*?"(\w+)"\);')
    for path in sorted((REPO / "native" / "interposer").glob("*.c")):
        text = path.read_text(encoding="utf-8")
        for m in begin.finditer(text):
            var, rtype = m.group(1), m.group(2)
            end = text.find("soak_rec_write", m.end())
            body = text[m.end():end]
            fields = records.setdefault(rtype, set())
            fields |= set(re.findall(rf'soak_json_\w+\(&{var}, "(\w+)"', body))
            common = re.search(rf'soak_json_common\(&{var}, (\w+)\)', body)
            if common:
                fields |= {"pid", "seq", "t_ns", "tid"} | ({"api"} if common.group(1) != "0" else set())
    return records


def test_every_emitted_event_and_field_is_in_the_registry():
    emits = _emits()
    assert {"run_start", "run_end", "iteration", "fault", "recovery", "device_push"} <= set(emits)  # the scan works
    missing = {name: sorted(emits[name]) for name in emits if name not in EVENT_TYPES}
    assert not missing, f"event types written but not in soak/run_folder/event_types.py: {missing}"
    fields = {f"{name}.{field}": sorted(where) for name, by in emits.items()
              for field, where in by.items() if field not in EVENT_TYPES[name]}
    assert not fields, f"fields written but not in the registry: {fields}"


def test_every_fault_kind_field_is_a_field_of_fault():
    fault = EVENT_TYPES["fault"]
    missing = {k.name: sorted(set(k.fields) - set(fault)) for k in fault_kinds.KINDS.values()
               if k.event and set(k.fields) - set(fault)}
    assert not missing, f"fault kind fields not in the registry's `fault`: {missing}"
    assert {"kind", "phase", "iteration"} <= set(fault)


def test_memory_samples_and_push_stats_are_in_the_registry():
    keys = (_dict_keys(_function(_tree("soak/targets/process_memory.py"), "sample_process"))
            | _dict_keys(_function(_tree("soak/targets/adb/meminfo.py"), "sample"))
            | _dict_keys(_function(_tree("soak/targets/adb/target.py"), "sample_memory"))
            | _dict_keys(_function(_tree("soak/loop/runner.py"), "sample_memory")))
    assert {"rss", "uss", "pss", "fds", "threads", "gpu_live_bytes"} <= keys  # the scan works
    assert not keys - set(EVENT_TYPES["memory"]), sorted(keys - set(EVENT_TYPES["memory"]))
    push = _dict_keys(_function(_tree("soak/targets/adb/push.py"), "sync_bundle"))
    assert {"pushed_files", "pushed_bytes"} <= push
    assert not push - set(EVENT_TYPES["device_push"]), sorted(push - set(EVENT_TYPES["device_push"]))


def test_every_interposer_record_that_becomes_an_event_is_in_the_registry():
    records = _interposer_records()
    assert {"start", "error", "build_failure", "profile", "config_error", "exit"} <= set(records)  # the scan works
    folded = _dict_keys(_function(_tree("soak/cl/trace.py"), "fold_errors")) - {"delta"}
    problems = {}
    for rtype, event in trace_events._EVENT_OF.items():
        fields = set(records.get(rtype, ())) | ({"count"} | folded if rtype == "error" else set())
        fields = {trace_events._RENAMED.get(f, f) for f in fields} - trace_events._DROPPED | {"iteration"}
        if event not in EVENT_TYPES:
            problems[event] = "not in the registry"
        elif fields - set(EVENT_TYPES[event]):
            problems[event] = sorted(fields - set(EVENT_TYPES[event]))
    assert not problems, f"interposer records -> events the registry lacks: {problems}"


@pytest.mark.parametrize("event", sorted(EVENT_TYPES))
def test_the_reader_checks_every_declared_field(event):
    """A value of the wrong type is dropped for every field the registry
    declares (the reader sanitizes with the registry), a right one is kept."""
    for field, ok in EVENT_TYPES[event].items():
        wrong = {"no": "a dict"} if not ok({"no": "a dict"}) else "text" if not ok("text") else 1.5
        assert not ok(wrong)
        ev = decode_line(f'{{"event": "{event}", "seq": 0, "t": 0.0}}'.encode())
        ev[field] = wrong
        assert sanitize(ev) == 1 and field not in ev, (event, field)


def test_wrong_types_of_the_newly_declared_events_are_dropped_as_read(tmp_path):
    from soak.events import EventLog
    from soak.run_folder import EVENTS, read_events

    log = EventLog(tmp_path / EVENTS, "t")
    log.emit("worker_exit", pid="not a pid", generation=0, signal="SIGSEGV", phase="decode")
    log.emit("cl_profile", phase=3, busy_ns="lots", commands=[{"api": "clEnqueueNDRangeKernel"}])
    log.emit("device_push", serial="R58M", pushed_files=[1])
    log.close()
    exit_, profile, push = list(read_events(tmp_path))
    assert "pid" not in exit_ and exit_["signal"] == "SIGSEGV" and exit_["generation"] == 0
    assert "busy_ns" not in profile and profile["phase"] == 3 and profile["commands"]
    assert "pushed_files" not in push and push["serial"] == "R58M"

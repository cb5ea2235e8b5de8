"""The fault-kind registry is the one list: code that emits or matches a kind the
registry lacks fails here, as does a row that no test-engine injection (or a stated
reason) backs, and replay judges "the same fault" by the catalog signature."""

import json
import re
from pathlib import Path

import pytest
from coresupport import faults

from soak import fault_kinds
from soak.catalog import schema
from soak.catalog.classify import classify_run
from soak.outputs.replay_source import replay_verdict

ROOT = Path(__file__).resolve().parents[2]
TEST_ENGINE = ROOT / "native" / "test_engine"

# Other things soak calls "kind" (not fault kinds), each with where it comes from.
OTHER_KINDS = {
    "native": "engine spec kind (worker protocol `open`)", "pymnn": "engine spec kind",
    "str": "OpenCL device-info value type (soak.cl.devinfo)", "bool": "OpenCL device-info value type",
    "error": "CL-trace record kind (soak.cl.trace)", "build_failure": "CL-trace record kind",
    "start": "CL-trace record kind", "config_error": "CL-trace record kind",
    "iteration": "event type", "load": "event type", "fault": "event type", "memory": "event type",
    "worker_start": "event type", "recovery": "event type", "worker_exit": "event type",
    "cl_build_failure": "event type", "cl_profile": "event type",
    "adb": "target kind (manifest host.kind)", "local": "target kind (manifest host.kind)",
    "disk": "`error` event kind (the disk holding the run folder filled up)",
}

# How code names a fault kind: emits one ({"kind": "x", "phase": ...}, kind="x", add_derived("x"),
# [{"kind": "x"}]) or matches one (kind == "x", kind in ("x", ...), ["kind"] == "x", .get("kind") == "x").
_EMIT_OR_MATCH = [
    re.compile(r'\{"kind":\s*"(\w+)"\s*[,}]'),
    re.compile(r'\bkind="(\w+)"'),
    re.compile(r'add_derived\(\s*"(\w+)"'),
    re.compile(r'\bkind\s*[!=]=\s*"(\w+)"'),
    re.compile(r'\["kind"\]\s*[!=]=\s*"(\w+)"'),
    re.compile(r'\.get\("kind"\)\s*[!=]=\s*"(\w+)"'),
]
_KIND_IN = re.compile(r'\bkind\s+(?:not\s+)?in\s+\(([^)]*)\)')


def kinds_named_in_code() -> dict[str, set[str]]:
    """{kind: {file:line, ...}} for every fault kind soak/ emits or matches."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "soak").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("soak/fault_kinds.py", "soak/loop/demo.py"):  # the registry; a test-engine plan
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            names = [m.group(1) for rx in _EMIT_OR_MATCH for m in rx.finditer(line)]
            for m in _KIND_IN.finditer(line):
                names += re.findall(r'"(\w+)"', m.group(1))
            for name in names:
                found.setdefault(name, set()).add(f"{rel}:{n}")
    return found


def test_every_kind_the_code_emits_or_matches_is_registered():
    named = kinds_named_in_code()
    # the walk sees the known emitters (a walk that finds nothing proves nothing); crash is named
    # by the registry's own death-kind rule only (a worker that never said hello is no crash)
    assert {"cl_error", "hang", "slowdown", "device_offline", "device_reboot", "worker_lost",
            "memory_growth", "context_overflow", "cl_call_error"} <= set(named)
    unknown = {k: sorted(v) for k, v in named.items() if k not in fault_kinds.KINDS and k not in OTHER_KINDS}
    assert not unknown, f"fault kinds used in code but missing from soak/fault_kinds.py: {unknown}"


def test_catalog_entries_may_match_exactly_the_registered_event_kinds():
    assert schema.FAULT_KINDS == fault_kinds.FAULT_KINDS
    assert {"device_offline", "device_reboot"} <= set(schema.FAULT_KINDS)
    assert "worker_lost" not in schema.FAULT_KINDS          # a recovery trigger, never an event


def test_rows_are_well_formed():
    for k in fault_kinds.KINDS.values():
        assert k.severity in schema.SEVERITIES, k
        assert k.key in fault_kinds.KEYS and k.source in fault_kinds.SOURCES, k
        assert set(k.phases) <= set(schema.PHASES), k
        assert k.parent is None or k.parent in fault_kinds.KINDS, k
        assert k.description, k


def _plan_kinds() -> list[str]:
    """The fault-plan kinds the test engine accepts (its KIND_NAMES)."""
    text = (TEST_ENGINE / "test_engine.c").read_text()
    names = re.search(r"KIND_NAMES\[\]\s*=\s*\{(.*?)\};", text, re.S).group(1)
    return re.findall(r'"(\w+)"', names)


def test_each_row_has_an_injection_path_or_says_why_not():
    plan_kinds = set(_plan_kinds())
    for k in fault_kinds.KINDS.values():
        assert k.inject or k.no_injection, f"{k.name}: neither a test-engine injection nor a reason"
        assert set(k.inject) <= plan_kinds, f"{k.name}: {set(k.inject) - plan_kinds} not in the test engine"
    # and no injection of the test engine produces a kind the registry does not know
    injected = {i for k in fault_kinds.KINDS.values() for i in k.inject}
    assert plan_kinds <= injected, plan_kinds - injected


def test_faults_md_documents_every_plan_kind():
    doc = (TEST_ENGINE / "FAULTS.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", doc.split("## Kinds", 1)[1], re.M))
    assert documented == set(_plan_kinds())


def test_the_loop_and_the_classifier_read_the_registry():
    assert fault_kinds.is_hard({"kind": "crash"}) and not fault_kinds.is_hard({"kind": "bad_output"})
    assert fault_kinds.is_hard({"kind": "error_line", "severity": "error"})
    assert not fault_kinds.is_hard({"kind": "error_line", "severity": "warning"})
    assert not fault_kinds.is_hard({"kind": "from_a_newer_soak"})
    assert fault_kinds.death_kind("SIGSEGV") == "crash" and fault_kinds.death_kind(None) == "crash"


def test_injected_engine_faults_arrive_as_their_registered_kinds(soak_run):
    """One run, one injection (its first) per engine-sourced row that fires on an iteration."""
    rows = [k for k in fault_kinds.KINDS.values()
            if k.source == "engine" and k.inject and k.inject[0] not in ("fail_load", "cpu_fallback")]
    plan = [{"kind": k.inject[0], "at": [2 + 3 * n], "seconds": 30} for n, k in enumerate(rows)]
    _, events = soak_run(plan, iterations=3 * len(rows) + 2, max_new_tokens=48)
    for n, k in enumerate(rows):
        got = {f["kind"] for f in faults(events, iteration=2 + 3 * n)}
        assert k.name in got, (k.name, plan[n], got)
        assert set(fault_kinds.KINDS[k.name].fields) >= {key for f in faults(events, k.name)
                                                         for key in f} - {"event", "ts", "t", "seq", "run_id",
                                                                          "kind", "iteration", "phase", "offset"}


# -- replay: one notion of "the same fault" -----------------------------------------

def _run_with(folder: Path, fault: dict) -> Path:
    folder.mkdir()
    ev = {"event": "fault", "seq": 0, "t": 0.0, "run_id": folder.name, "iteration": 3, "phase": "decode", **fault}
    (folder / "events.jsonl").write_text(json.dumps(ev) + "\n")
    return folder


def _signature_of(run: Path) -> str:
    return [f["signature"] for f in classify_run(run, write=False)["findings"]][0]


@pytest.mark.parametrize("original, replayed, same", [
    # same code, another kernel: the catalog tells these apart, so replay must too
    ({"kind": "cl_error", "code": -5, "info": "run3d"}, {"kind": "cl_error", "code": -5, "info": "Raster"}, False),
    # the same MNN line with another buffer size: one signature, so a reproduction
    ({"kind": "error_line", "pattern": "alloc_buffer_error", "line": "Alloc Buffer 1048576 error, code:-4 "},
     {"kind": "error_line", "pattern": "alloc_buffer_error", "line": "Alloc Buffer 2097152 error, code:-4 "}, True),
    # one signal, other last lines: other faults
    ({"kind": "crash", "signal": "SIGSEGV", "last_lines": ["Map error key_ptr == nullptr "]},
     {"kind": "crash", "signal": "SIGSEGV", "last_lines": ["Build program failed, err:-11 !"]}, False),
])
def test_replay_verdict_follows_the_catalog_signature(tmp_path, original, replayed, same):
    a, b = _run_with(tmp_path / "orig", original), _run_with(tmp_path / "replay", replayed)
    assert (_signature_of(a) == _signature_of(b)) is same
    verdict = replay_verdict(a, 3, b)
    assert verdict["reproduced"] is same
    assert set(verdict["original_faults"]) == {_signature_of(a)}
    assert not verdict["clean_both"]


def test_architecture_lists_the_fault_events_of_the_registry():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = doc.split("`fault` kinds and their fields", 1)[1].split("\n\n`phase`", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    recorded = {k.name for k in fault_kinds.KINDS.values() if k.event and k.source in ("engine", "loop", "target")}
    assert documented == recorded, (documented ^ recorded)

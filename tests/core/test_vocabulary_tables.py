"""One declaration per vocabulary: phases (soak.phases), signal names (soak.signals) and
severities (soak.fault_kinds).  Each table has a source scan that fails when a second copy of
its literal set appears anywhere in soak/, and the modules that use it hold the same object."""

from __future__ import annotations

import ast
import re
import signal
import sys
from pathlib import Path

import pytest

from soak import fault_kinds, phases, signals

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "soak"
HEADER = ROOT / "native" / "interposer" / "stats_layout.h"


def _literals(owner: str):
    """(where, strings, pairs) of every tuple/list/set/dict literal in soak/ outside `owner`:
    the string constants it holds, and for a dict its (key, value) constant pairs."""
    for path in sorted(SOAK.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == owner:
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Dict):
                items = [k for k in node.keys if k is not None] + list(node.values)
                pairs = [(k.value, v.value) for k, v in zip(node.keys, node.values)
                         if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)]
            elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                items, pairs = node.elts, []
            else:
                continue
            strings = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
            yield f"{rel}:{node.lineno}", strings, pairs


# --- severities ------------------------------------------------------------------------

def test_severities_are_declared_once():
    names = set(fault_kinds.SEVERITIES)
    copies = [where for where, strings, _ in _literals("soak/fault_kinds.py") if len(strings & names) >= 3]
    assert copies == []


def test_severity_users_hold_the_one_table():
    from soak.catalog import schema
    from soak.outputs import policy

    assert schema.SEVERITIES is fault_kinds.SEVERITIES and policy.SEVERITIES is fault_kinds.SEVERITIES
    assert schema.SEVERITY_RANK is fault_kinds.SEVERITY_RANK
    assert [fault_kinds.SEVERITY_RANK[s] for s in fault_kinds.SEVERITIES] == list(range(5))
    assert fault_kinds.DEFAULT_SEVERITY in fault_kinds.SEVERITIES


# --- phases ----------------------------------------------------------------------------

def test_fault_phases_are_declared_once():
    names = set(phases.FAULT_PHASES)
    copies = [where for where, strings, _ in _literals("soak/phases.py") if names <= strings]
    assert copies == []


def test_profile_phase_codes_are_declared_once():
    names = set(phases.PROFILE_PHASES.values())
    copies = []
    for where, strings, pairs in _literals("soak/phases.py"):
        coded = [p for p in pairs if isinstance(p[0], int) and p[1] in names
                 or isinstance(p[1], int) and p[0] in names]
        if len(coded) >= 3 or names <= strings:
            copies.append(where)
    assert copies == []


def test_phase_users_hold_the_one_table():
    from soak.analysis import profile
    from soak.catalog import schema
    from soak.cl import trace

    assert schema.PHASES is phases.FAULT_PHASES
    assert trace.PHASES is phases.PROFILE_PHASES and trace.PHASE_CODE is phases.PROFILE_PHASE_CODE
    assert profile.phase_of({"phase": 3}) == "decode" and profile.phase_of({}) == "load"
    assert set(phases.PROFILE_PHASE_ORDER) == set(phases.PROFILE_PHASES.values())
    assert phases.PROFILE_PHASE_CODE == {"load": 1, "prefill": 2, "decode": 3, "idle": 4, "respond": 5}
    for kind in fault_kinds.KINDS.values():
        assert set(kind.phases) <= set(phases.FAULT_PHASES), kind.name


def test_profile_phase_codes_match_the_interposer_header():
    """soak_stats_header.phase's comment lists the codes the C side keys its windows on."""
    text = HEADER.read_text()
    comment = re.search(r"uint64_t\s+phase;\s*/\*(.*?)\*/", text, re.S).group(1)
    listed = {int(n): name for n, name in re.findall(r"\b([1-9])\s+([a-z]+)", comment)}
    assert listed == {c: n for c, n in phases.PROFILE_PHASES.items() if c}
    assert "0 before" in comment and "(load)" in comment  # code 0: the load, before the first mark
    # profile.c's one phase constant (the idle mark writes the ended window at once)
    idle = re.search(r"#define PHASE_IDLE (\d+)", (HEADER.parent / "profile.c").read_text()).group(1)
    assert int(idle) == phases.PROFILE_PHASE_CODE["idle"]


# --- signals ---------------------------------------------------------------------------

def test_signal_names_are_declared_once():
    copies = [where for where, _, pairs in _literals("soak/signals.py")
              if sum(1 for k, v in pairs if isinstance(k, int) and isinstance(v, str) and v.startswith("SIG")) >= 2]
    assert copies == []
    lookups = []
    for path in sorted(SOAK.rglob("*.py")):
        if path.name == "signals.py" and path.parent == SOAK:
            continue
        text = path.read_text()
        if re.search(r"\bSignals\s*\(|Signals\.__members__|strsignal\s*\(", text):
            lookups.append(path.relative_to(ROOT).as_posix())
    assert lookups == []  # a name looked up in the host's signal module: a second table


def test_signal_users_hold_the_one_table():
    from soak.catalog import signature
    from soak.worker import supervisor

    assert signature.signal_name is signals.name
    assert supervisor.signal_name(-11) == "SIGSEGV" and supervisor.signal_name(137) == "SIGKILL"
    assert supervisor.signal_name(-10) == "SIGUSR1"  # was "SIG10": the worker's own table had 8 names
    assert supervisor.signal_name(0) is None and supervisor.signal_name(None) is None


@pytest.mark.parametrize("raw, want", [(11, "SIGSEGV"), ("11", "SIGSEGV"), (-6, "SIGABRT"), ("segv", "SIGSEGV"),
                                       ("SIGIOT", "SIGABRT"), ("sigpoll", "SIGIO"), (99, "SIG99"),
                                       (None, None), ("", None), (True, None)])
def test_one_spelling_per_signal(raw, want):
    assert signals.name(raw) == want


def test_known_signals_for_the_catalog():
    assert signals.known("bus") == "SIGBUS" and signals.known(9) == "SIGKILL" and signals.known("SIGCLD") == "SIGCHLD"
    assert signals.known("SIGFOO") is None and signals.known(99) is None
    assert signals.known("11") is None and signals.known(True) is None and signals.known(1.5) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the table holds Linux numbers")
def test_the_table_is_linux_numbering():
    for number, name in signals.NAMES.items():
        assert signal.Signals[name].value == number, name
    for alias, name in signals.ALIASES.items():
        assert signal.Signals[alias].value == signal.Signals[name].value, alias

"""The catalog's `match` keys: one row per key, the only place a key is declared.

A row says what the key's value is (`doc`: the schema, error messages, `soak catalog
show`), how a value validates (`value`: read by soak.catalog._validate, which knows the
value types and nothing of the keys), how it matches (`cond`: the compiled condition of
soak.catalog._conditions for a valid value) and which fault kinds it can fire on
(`fires_on`: soak.catalog.matcher indexes entries by it).  The tables are data; the
validator and the matcher are the one piece of code that reads them (as syzkaller keeps
its tables apart from its matcher).
tests/catalog/test_match_keys.py fails when a key name appears in the schema, the
validator, the conditions or the matcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from soak import signals
from soak.catalog import _conditions as C
from soak.catalog._clcodes import parse_code
from soak.engine.abi import STATUS as LLM_STATUS
from soak.fault_kinds import FAULT_KINDS, and_refinements, with_field
from soak.phases import FAULT_PHASES
from soak.run_folder import ENGINE_LOG

# the values of the keys that take a choice
OUTPUT_SYMPTOMS = ("invalid_utf8", "empty", "repetition", "garbage")
MEMORY_RESOURCES = ("host", "gpu")
MEMORY_KEPT = ("ratchet", "retained")
PERF_SYMPTOMS = ("tps_up_with_errors",)


@dataclass(frozen=True)
class Value:
    """How a value validates (soak.catalog._validate reads each type):
    conditions  a non-empty list of conditions        condition  one condition (a mapping)
    choices     one or a list of `choices`             strings    one or a list of strings
    items       one or a list, each parsed by `parse` (None: not valid; `what` says what it must be)
    regex       a regex                                bool       true or false
    window      {min, max}, either or both              min_count  {min: N}, an integer N"""
    type: str
    choices: tuple[str, ...] = ()
    parse: Callable[[Any], Any] | None = None
    what: str = ""


CONDITIONS, CONDITION = Value("conditions"), Value("condition")
STRINGS, REGEX, BOOL, WINDOW, MIN_COUNT = (Value("strings"), Value("regex"), Value("bool"), Value("window"),
                                           Value("min_count"))


def choices(names) -> Value:
    return Value("choices", tuple(names))


def items(parse, what: str) -> Value:
    return Value("items", parse=parse, what=what)


@dataclass(frozen=True)
class MatchKey:
    name: str
    doc: str                                   # what the value is
    value: Value                               # how it validates
    cond: Callable[[Any], C.Cond]              # how it matches: the condition of a valid value
    fires_on: Callable[[Any], frozenset[str]] | None = None  # the kinds it can fire on (None: any)

    @property
    def combinator(self) -> bool:
        """A key over conditions (all, any, not, run_has), not a leaf of the match tree."""
        return self.value.type in ("conditions", "condition")

    def compile(self, value) -> C.Cond:
        """The condition of a valid value; a leaf carries its key and the kinds it can fire on."""
        cond = self.cond(value)
        if self.combinator:
            return cond
        return C.Keyed(self.name, self.fires_on(value) if self.fires_on else None, cond)


def _carrying(*fields: str):
    """Fires only on kinds whose fault events carry one of `fields` (soak.fault_kinds)."""
    return lambda value: frozenset().union(*(with_field(f) for f in fields))


def _when_true(kind: str):
    return lambda value: frozenset({kind}) if value else None


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _status(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value in LLM_STATUS.values() else None
    if isinstance(value, str):
        return LLM_STATUS.get(value.upper())
    return None


def _window(name: str, doc: str) -> MatchKey:
    return MatchKey(name, doc, WINDOW, lambda v: C.Window(name, v[0], v[1]))


def _kind_flag(name: str, doc: str, kind: str, yes: tuple[str, ...], no: tuple[str, ...]) -> MatchKey:
    """true: the finding is of `kind` (and the key fires on that kind only); false: it is not."""
    return MatchKey(name, doc, BOOL, lambda v: C.KindIs(kind, v, yes if v else no), _when_true(kind))


KEYS: dict[str, MatchKey] = {k.name: k for k in (
    MatchKey("all", "list of conditions, all must hold", CONDITIONS, C.All),
    MatchKey("any", "list of conditions, one must hold", CONDITIONS, C.Any_),
    MatchKey("not", "a condition that must not hold", CONDITION, C.Not),
    MatchKey("run_has", "a condition some finding of the same run must satisfy", CONDITION, C.RunHas),
    MatchKey("kind", "fault kind(s): " + ", ".join(FAULT_KINDS), choices(FAULT_KINDS),
             lambda v: C.KindIn(and_refinements(v)), and_refinements),
    # a code of its own, or one in the lines before a death or hang
    MatchKey("cl_code", "CL error code(s), number or name (CL_OUT_OF_RESOURCES)",
             items(parse_code, "a CL error code (number or CL_* name)"), C.CodeIn, _carrying("code", "last_lines")),
    MatchKey("info", "MNN info tag(s) of `CL ERROR CODE : N, info:<tag>`", STRINGS, C.InfoIn, _carrying("info")),
    MatchKey("info_regex", "regex over the info tag", REGEX, C.InfoRegex, _carrying("info")),
    MatchKey("pattern", "soak.logparse pattern name(s) of an error_line (kv_map_error, build_program_failed, ...)",
             STRINGS, C.PatternIn, _carrying("pattern")),
    MatchKey("api", "OpenCL API name(s) from interposer records", STRINGS, C.ApiIn, _carrying("api")),
    MatchKey("log", "regex over the fault's own log text (line, last lines, iteration error lines)", REGEX,
             C.LogRegex),
    MatchKey("engine_log", f"regex anywhere in {ENGINE_LOG}", REGEX, C.EngineLogRegex),
    MatchKey("frame", "regex over a crash's native frames (function, `name (OpenCL kernel)`, module+0xoffset)",
             REGEX, C.FrameRegex, _carrying("backtrace")),
    MatchKey("signal", "exit signal(s): SIGSEGV, SIGABRT, SIGKILL, ... (or numbers)",
             items(signals.known, "a signal name or number"), C.SignalIn, _carrying("signal")),
    MatchKey("exit_code", "worker exit code(s)", items(_int, "an integer"), C.ExitCodeIn),
    MatchKey("phase", "phase(s): " + ", ".join(FAULT_PHASES), choices(FAULT_PHASES), C.PhaseIn),
    MatchKey("status", "LlmStatus value(s), number or name (INTERNAL_ERROR)",
             items(_status, "an LlmStatus (number -1..5 or name)"), C.StatusIn),
    _window("iteration", "window {min, max} over the global iteration index"),
    _window("turn", "window {min, max} over the turn within a conversation (0-based)"),
    _window("context_tokens", "window {min, max} over the history length in tokens"),
    MatchKey("first_step", "window {min, max} over a checked turn's first diverging step (the oracle's "
             "wrong_output: first step over the thresholds; nonfinite_logits: first NaN/inf step; 0 = the prefill's "
             "logits)", WINDOW, lambda v: C.Window("first_step", v[0], v[1]), _carrying("first_step")),
    MatchKey("context_past_max", "true: history went past the model's context length", BOOL,
             lambda v: C.ContextPastMax("context_tokens", v)),
    MatchKey("output", "output symptom(s): " + ", ".join(OUTPUT_SYMPTOMS), choices(OUTPUT_SYMPTOMS),
             lambda v: C.OutputAny("bad_output", v), _carrying("symptoms")),
    MatchKey("memory", "memory growth (a leak): host and/or gpu", choices(MEMORY_RESOURCES),
             lambda v: C.MemoryAny("memory_growth", v), _carrying("resource")),
    MatchKey("memory_kept", "memory not given back at reset: " + ", ".join(MEMORY_KEPT), choices(MEMORY_KEPT),
             lambda v: C.MemoryKept("memory_kept", v), _carrying("symptom")),
    MatchKey("perf", "performance symptom(s): " + ", ".join(PERF_SYMPTOMS), choices(PERF_SYMPTOMS),
             lambda v: C.PerfAny("perf_anomaly", v), _carrying("symptom")),
    _kind_flag("hang", "true: the worker hung (watchdog)", "hang", ("hang",), ("no hang",)),
    _kind_flag("cpu_fallback", "true: OpenCL requested, CPU used", "cpu_fallback", ("silent CPU fallback",), ()),
    MatchKey("count", "{min: N}: occurrences in the run (CL codes: over all info tags)", MIN_COUNT, C.CountAtLeast),
    MatchKey("injected", "true/false: interposer-injected error", BOOL, C.Injected, _when_true("cl_call_error")),
)}

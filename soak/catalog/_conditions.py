"""Compiled catalog conditions: the `match` tree of an entry.

A condition is evaluated against one finding (a group of identical fault
events of a run) and the run it came from.  `test()` returns
`(fired, why)`: `why` lists, in plain words, the matchers that fired.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from soak.catalog._clcodes import code_name
from soak.run_folder import ENGINE_LOG

if TYPE_CHECKING:  # pragma: no cover
    from soak.catalog._finding import Finding, RunFacts


class Cond:
    def test(self, f: "Finding", run: "RunFacts") -> tuple[bool, list[str]]:
        raise NotImplementedError


@dataclass(frozen=True)
class All(Cond):
    parts: tuple[Cond, ...]

    def test(self, f, run):
        why: list[str] = []
        for part in self.parts:
            ok, w = part.test(f, run)
            if not ok:
                return False, []
            why.extend(w)
        return True, why


@dataclass(frozen=True)
class Any_(Cond):
    parts: tuple[Cond, ...]

    def test(self, f, run):
        for part in self.parts:
            ok, w = part.test(f, run)
            if ok:
                return True, w
        return False, []


@dataclass(frozen=True)
class Not(Cond):
    part: Cond

    def test(self, f, run):
        ok, _ = self.part.test(f, run)
        return (not ok), ([] if ok else ["negated condition held"])


@dataclass(frozen=True)
class Keyed(Cond):
    """A leaf of the match tree: the condition of one match key (soak.catalog.match_keys),
    with the fault kinds it can fire on (None: any)."""

    key: str
    kinds: frozenset[str] | None
    cond: Cond

    def test(self, f, run):
        return self.cond.test(f, run)


@dataclass(frozen=True)
class KindIn(Cond):
    kinds: frozenset[str]

    def test(self, f, run):
        return (f.kind in self.kinds), [f"kind {f.kind}"]


@dataclass(frozen=True)
class CodeIn(Cond):
    codes: frozenset[int]

    def test(self, f, run):
        if f.code is not None and f.code in self.codes:
            return True, [f"CL code {f.code} ({code_name(f.code)})"]
        return False, []


@dataclass(frozen=True)
class InfoIn(Cond):
    tags: frozenset[str]

    def test(self, f, run):
        if f.info is not None and f.info in self.tags:
            return True, [f"info tag {f.info!r}"]
        return False, []


@dataclass(frozen=True)
class InfoRegex(Cond):
    regex: re.Pattern

    def test(self, f, run):
        if f.info is not None and self.regex.search(f.info):
            return True, [f"info tag {f.info!r} ~ /{self.regex.pattern}/"]
        return False, []


@dataclass(frozen=True)
class PatternIn(Cond):
    patterns: frozenset[str]

    def test(self, f, run):
        if f.pattern is not None and f.pattern in self.patterns:
            return True, [f"log pattern {f.pattern}"]
        return False, []


@dataclass(frozen=True)
class ApiIn(Cond):
    apis: frozenset[str]

    def test(self, f, run):
        if f.api is not None and f.api in self.apis:
            return True, [f"API {f.api}"]
        return False, []


@dataclass(frozen=True)
class LogRegex(Cond):
    """Regex over the finding's own text: its log line, a crash's or
    hang's last lines, and the error lines of its iterations."""

    regex: re.Pattern

    def test(self, f, run):
        for text in f.texts:
            if self.regex.search(text):
                return True, [f"log line ~ /{self.regex.pattern}/: {_clip(text)}"]
        return False, []


@dataclass(frozen=True)
class FrameRegex(Cond):
    """Regex over the names of a crash's native frames (soak.backtrace.frame_name: a function
    without its parameters, `softmax_inside (OpenCL kernel)`, or `module+0xoffset`)."""

    regex: re.Pattern

    def test(self, f, run):
        for name in f.frames:
            if self.regex.search(name):
                return True, [f"crash frame {name!r} ~ /{self.regex.pattern}/"]
        return False, []


@dataclass(frozen=True)
class EngineLogRegex(Cond):
    """Regex anywhere in the run's engine.log (searched once per run)."""

    regex: re.Pattern

    def test(self, f, run):
        hit = run.engine_log_search(self.regex)
        if hit is not None:
            return True, [f"{ENGINE_LOG} ~ /{self.regex.pattern}/: {_clip(hit)}"]
        return False, []


@dataclass(frozen=True)
class SignalIn(Cond):
    signals: frozenset[str]

    def test(self, f, run):
        if f.signal is not None and f.signal in self.signals:
            return True, [f"signal {f.signal}"]
        return False, []


@dataclass(frozen=True)
class ExitCodeIn(Cond):
    codes: frozenset[int]

    def test(self, f, run):
        if f.exit_code is not None and f.exit_code in self.codes:
            return True, [f"exit code {f.exit_code}"]
        return False, []


@dataclass(frozen=True)
class PhaseIn(Cond):
    phases: frozenset[str]

    def test(self, f, run):
        return (f.phase in self.phases), [f"phase {f.phase}"]


@dataclass(frozen=True)
class StatusIn(Cond):
    statuses: frozenset[int]

    def test(self, f, run):
        if f.status is not None and f.status in self.statuses:
            return True, [f"status {f.status} ({f.status_name or '?'})"]
        return False, []


@dataclass(frozen=True)
class Window(Cond):
    """iteration / turn / context_tokens window: fires when the finding's
    range [first, last] overlaps [min, max]."""

    field: str
    lo: float | None
    hi: float | None

    def test(self, f, run):
        rng = f.ranges.get(self.field)
        if rng is None:
            return False, []
        first, last = rng
        if self.lo is not None and last < self.lo:
            return False, []
        if self.hi is not None and first > self.hi:
            return False, []
        span = f"{first}" if first == last else f"{first}..{last}"
        return True, [f"{self.field} {span} in window {_window(self.lo, self.hi)}"]


@dataclass(frozen=True)
class ContextPastMax(Cond):
    field: str          # the finding's range of history lengths
    want: bool

    def test(self, f, run):
        rng = f.ranges.get(self.field)
        limit = run.max_context
        if rng is None or limit is None:
            return False, []
        past = rng[1] > limit
        if past == self.want:
            return True, [f"context {rng[1]} tokens {'past' if past else 'within'} the model's {limit}"]
        return False, []


@dataclass(frozen=True)
class OutputAny(Cond):
    kind: str           # the kind whose findings carry output symptoms
    symptoms: frozenset[str]

    def test(self, f, run):
        hit = self.symptoms & f.symptoms
        if f.kind == self.kind and hit:
            return True, ["output " + ", ".join(sorted(hit))]
        return False, []


@dataclass(frozen=True)
class MemoryAny(Cond):
    kind: str           # the kind of a memory growth finding
    resources: frozenset[str]

    def test(self, f, run):
        if f.kind == self.kind and f.resource in self.resources:
            return True, [f"{f.resource} memory growth"]
        return False, []


@dataclass(frozen=True)
class MemoryKept(Cond):
    kind: str           # the kind of a memory-kept finding
    shapes: frozenset[str]

    def test(self, f, run):
        if f.kind == self.kind and f.symptom in self.shapes:
            return True, [f"{f.resource} memory {f.symptom} (kept after reset)"]
        return False, []


@dataclass(frozen=True)
class KindIs(Cond):
    """The finding is (want) or is not (not want) of `kind`; `said` is why, when it holds."""

    kind: str
    want: bool
    said: tuple[str, ...] = ()

    def test(self, f, run):
        return ((f.kind == self.kind) == self.want), list(self.said)


@dataclass(frozen=True)
class PerfAny(Cond):
    kind: str           # the kind of a performance finding
    symptoms: frozenset[str]

    def test(self, f, run):
        if f.kind == self.kind and f.symptom in self.symptoms:
            return True, [f"performance: {f.symptom}"]
        return False, []


@dataclass(frozen=True)
class CountAtLeast(Cond):
    """Occurrences in the run: for CL codes, of that code over all info tags
    (a dead queue floods many tags); otherwise of this finding."""

    lo: int

    def test(self, f, run):
        n = run.code_counts.get(f.code, f.count) if f.code is not None else f.count
        return (n >= self.lo), [f"{n} occurrences (>= {self.lo})"]


@dataclass(frozen=True)
class Injected(Cond):
    want: bool

    def test(self, f, run):
        return (f.injected == self.want), (["injected by the interposer"] if self.want else [])


@dataclass(frozen=True)
class RunHas(Cond):
    """Some finding of the same run (this one included) that began no later
    than this one ended satisfies `part`: a cause precedes its effect."""

    part: Cond

    def test(self, f, run):
        for other in run.findings:
            if other.first_seq is not None and f.last_seq is not None and other.first_seq > f.last_seq:
                continue
            ok, w = self.part.test(other, run)
            if ok:
                return True, ["earlier in the run: " + "; ".join(w)]
        return False, []


def _clip(text: str, n: int = 100) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 1] + "…"


def _window(lo, hi) -> str:
    return f"[{'' if lo is None else lo}..{'' if hi is None else hi}]"


def leaves(cond: Cond) -> Iterable[Cond]:
    """Every leaf of a condition tree (for specificity ranking)."""
    if isinstance(cond, (All, Any_)):
        for p in cond.parts:
            yield from leaves(p)
    elif isinstance(cond, (Not, RunHas)):
        yield from leaves(cond.part)
    else:
        yield cond

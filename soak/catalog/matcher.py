"""Match findings of a run against catalog entries.

For each finding: the entries whose `match` fires and whose `applies_to`
fits the run (matches, with why), and the entries whose `match` fires but
whose `applies_to` does not (near misses, with what differs), e.g. a fault
known on 1.8B models seen on a 0.5B one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from soak.catalog import _conditions as C
from soak.catalog._context import RunContext, check_applies
from soak.catalog._finding import Finding, RunFacts
from soak.catalog.schema import FAULT_KINDS, SEVERITY_RANK, Entry

MAX_NEAR_MISSES = 5
_ALL = frozenset(FAULT_KINDS)


@dataclass
class Match:
    entry: Entry
    why: list[str]
    fits: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    mismatch: list[str] = field(default_factory=list)

    def to_json(self, near: bool = False) -> dict:
        e = self.entry
        d = {"id": e.id, "title": e.title, "severity": e.severity, "generic": e.generic,
             "why": self.why}
        if near:
            d["mismatch"] = self.mismatch
        else:
            d["context_fits"] = self.fits
            d["context_unknown"] = self.unknown
            d["remedy"] = {"cause": e.remedy.cause, "workaround": e.remedy.workaround,
                           "fixed_in": e.remedy.fixed_in, "references": list(e.remedy.references)}
        if e.reports:
            d["reports"] = list(e.reports)
        return d


def possible_kinds(cond: C.Cond) -> frozenset[str]:
    """Fault kinds a condition can fire on (to skip entries fast)."""
    if isinstance(cond, C.All):
        out = _ALL
        for p in cond.parts:
            out = out & possible_kinds(p)
        return out
    if isinstance(cond, C.Any_):
        out = frozenset()
        for p in cond.parts:
            out = out | possible_kinds(p)
        return out
    if isinstance(cond, C.Keyed) and cond.kinds is not None:  # its key's fires_on (soak.catalog.match_keys)
        return cond.kinds & _ALL
    return _ALL


class Matcher:
    """Entries indexed by fault kind; applies_to judged once per entry per run."""

    def __init__(self, entries: list[Entry]):
        self.entries = entries
        self.by_kind: dict[str, list[Entry]] = {k: [] for k in FAULT_KINDS}
        for e in entries:
            if e.benign:  # benign-probe entries are applied by _causal.mark_benign, not matched
                continue
            for k in possible_kinds(e.match):
                self.by_kind[k].append(e)

    def match_run(self, findings: list[Finding], run: RunFacts, ctx: RunContext) -> dict[str, tuple[list[Match], list[Match]]]:
        applies: dict[str, tuple] = {}
        out: dict[str, tuple[list[Match], list[Match]]] = {}
        for f in findings:
            out[f.signature] = self.match_finding(f, run, ctx, applies)
        return out

    def match_finding(self, f: Finding, run: RunFacts, ctx: RunContext, applies_cache: dict | None = None):
        applies_cache = {} if applies_cache is None else applies_cache
        matches: list[Match] = []
        near: list[Match] = []
        for e in self.by_kind.get(f.kind, ()):
            ok, why = e.match.test(f, run)
            if not ok:
                continue
            if e.id not in applies_cache:
                applies_cache[e.id] = check_applies(e.applies_to, ctx)
            fits, bad, unknown = applies_cache[e.id]
            if bad:
                near.append(Match(e, why, mismatch=bad))
            else:
                matches.append(Match(e, why, fits=fits, unknown=unknown))
        matches.sort(key=rank)
        near.sort(key=lambda m: (len(m.mismatch), m.entry.generic, -m.entry.specificity, m.entry.id))
        return matches, near[:MAX_NEAR_MISSES]


def rank(m: Match):
    """Best first: a known fault before a generic class, a fully confirmed
    context before one with unknowns, more specific, more severe."""
    e = m.entry
    return (e.generic, len(m.unknown), -(e.specificity + len(m.fits)), SEVERITY_RANK[e.severity], e.id)

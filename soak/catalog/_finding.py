"""A finding: identical fault events of one run grouped under one signature.
RunFacts: what the matcher may ask about the run as a whole."""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass, field

from soak import fault_kinds
from pathlib import Path


@dataclass(slots=True)
class Finding:
    signature: str
    signature_text: str
    kind: str
    phase: str | None
    code: int | None = None
    info: str | None = None
    api: str | None = None
    pattern: str | None = None                      # soak.logparse pattern name (error_line)
    signal: str | None = None
    exit_code: int | None = None
    status: int | None = None
    status_name: str | None = None
    symptoms: frozenset = frozenset()
    resource: str | None = None
    symptom: str | None = None
    injected: bool = False
    param_name: str | None = None                   # clGet*Info param of a cl_call_error
    tags: dict = field(default_factory=dict)        # info tag / kernel -> occurrences
    where: dict = field(default_factory=dict)       # causal bucket -> [first order key in it, count] (_causal)
    minor: bool = False                             # a warning (slowdown, warning line): starts and joins no cascade
    benign: str | None = None                       # id of the catalog entry that marks it a benign probe
    texts: list = field(default_factory=list)       # log text the `log` matcher searches
    frames: tuple = ()                              # a crash's native frame names (the `frame` matcher)
    count: int = 0                                  # occurrences (log lines for cl_error)
    events: int = 0                                 # fault events
    iterations: list = field(default_factory=list)  # distinct iterations, in order seen
    first_seq: int | None = None
    last_seq: int | None = None
    first_t: float | None = None
    last_t: float | None = None
    ranges: dict = field(default_factory=dict)      # iteration/turn/context_tokens/first_step -> (lo, hi)
    sample: dict = field(default_factory=dict)      # the first event, trimmed
    extra: dict = field(default_factory=dict)       # derived faults: figures behind them

    def add(self, ev: dict, count: int = 1, tag: str | None = None) -> None:
        self.events += 1
        self.count += count
        if tag:
            self.tags[tag] = self.tags.get(tag, 0) + count
        it = ev.get("iteration")
        b = ev.get("bucket")
        if b is None:
            b = it if isinstance(it, int) else bucket_of(self.kind, ev)
        if b is not None:
            w = self.where.get(b)
            if w is None:
                self.where[b] = [order_key(self.kind, ev), count]
            else:
                w[1] += count
        fs = ev.get("first_step")    # the oracle's first diverging step of a checked turn
        if fs.__class__ is int:
            r = self.ranges.get("first_step")
            self.ranges["first_step"] = (fs, fs) if r is None else (min(r[0], fs), max(r[1], fs))
        if isinstance(it, int) and (not self.iterations or self.iterations[-1] != it):
            self.iterations.append(it)
        seq = ev.get("seq")
        if isinstance(seq, int):
            if self.first_seq is None:
                self.first_seq = seq
            self.last_seq = seq
        t = ev.get("t")
        if isinstance(t, (int, float)):
            if self.first_t is None:
                self.first_t = t
            self.last_t = t


# Causal order of fault records within one bucket (an iteration, with the
# init/load that preceded it): an interposer record (the OpenCL call failed)
# comes before the log line MNN printed about it, which comes before what the
# call's end showed (crash, hang, status), which comes before the output checks.
# Ranked by the kind's registry key (soak.fault_kinds): an interposer call,
# then log lines, then how the call ended; output and derived kinds last.
_RANK_BY_KEY = {"call": 0, "cl": 1, "line": 1, "death": 2, "stall": 2, "error": 2, "status": 2}
_CALL_ENDINGS = frozenset({"device_offline", "device_reboot", "worker_lost"})
_BEFORE_ITERATION = ("init", "load")


def bucket_of(kind: str, ev: dict) -> int | None:
    """The iteration a fault record belongs to causally.  init/load faults
    carry the iteration after them (`bucket`, set by the scan from file order)
    or the session's; None for records with no iteration (derived faults)."""
    b = ev.get("bucket")
    if isinstance(b, int):
        return b
    it = ev.get("iteration")
    if isinstance(it, int):
        return it
    return 0 if ev.get("phase") in _BEFORE_ITERATION or "offset" in ev or "call_seq" in ev else None


def order_key(kind: str, ev: dict) -> tuple:
    rank = _RANK_BY_KEY.get(fault_kinds.key_of(kind), 2 if kind in _CALL_ENDINGS else 3)
    if rank == 0:  # a folded interposer record (count > 1) starts at its first_seq
        pos = ev.get("first_seq") if isinstance(ev.get("first_seq"), int) else ev.get("call_seq")
    elif rank == 1:
        pos = ev.get("offset")
    else:
        pos = None
    seq = ev.get("seq")
    seq = seq if isinstance(seq, int) else 0
    return (rank, pos if isinstance(pos, int) else seq, seq)


class RunFacts:
    """Run-level facts for conditions: other findings, per-code counts,
    the model's context length, and a cached search of engine.log."""

    def __init__(self, findings: list[Finding], code_counts: dict[int, int],
                 max_context: int | None, engine_log: Path | None):
        self.findings = findings
        self.code_counts = code_counts
        self.max_context = max_context
        self._engine_log = engine_log
        self._searched: dict[str, str | None] = {}

    def engine_log_search(self, regex: re.Pattern) -> str | None:
        key = regex.pattern
        if key not in self._searched:
            self._searched[key] = _search_file(self._engine_log, regex)
        return self._searched[key]


def _search_file(path: Path | None, regex: re.Pattern) -> str | None:
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        bregex = re.compile(regex.pattern.encode("utf-8"), regex.flags & ~re.UNICODE)
    except re.error:  # a str-only construct: search decoded text instead
        for line in path.read_text("utf-8", "replace").splitlines():
            if regex.search(line):
                return line
        return None
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        m = bregex.search(mm)
        if not m:
            return None
        start = mm.rfind(b"\n", 0, m.start()) + 1
        end = mm.find(b"\n", m.end())
        return mm[start: end if end != -1 else len(mm)].decode("utf-8", "replace")

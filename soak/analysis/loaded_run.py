"""A run as loaded for the analyses and outputs: the run folder reduced in one
streaming pass, in bounded memory (the folder's contract, its file names and
its reader, is soak.run_folder; this is one view of what it holds).

Everything after the engine reads only the run folder (docs/ARCHITECTURE.md),
through soak.run_folder (names, schema, the one event reader).  `RunFolder`
reads events.jsonl once, line by line, and keeps what the verdicts, gate,
bundle and report ask of it in memory that does not grow with the run:

- `notable`: every event except `iteration`, `memory`, `oracle_turn` and `cl_profile` (the
  interposer's profile windows, several per iteration: `stream()` them) (faults, recoveries,
  loads, worker starts, run_start/run_end): these grow with the faults, not
  with the iterations;
- `iteration_series` and `memory_samples`: the iteration and memory events
  without their long text, thinned by `Decimator` to at most
  `SERIES_CAP` each (every event while the run is shorter; a long run keeps
  every k-th, k a power of two, so the samples stay evenly spaced);
- `oracle_tally`: the teacher-forced turns (`oracle_turn`, one per checked turn) folded into
  soak.analysis.oracle_verdict.OracleTally (counts, reservoirs, a thinned KL series);
- counts, first/last times and the run_end.

The memory samples next to each recovery (the last before it, the first
after it) are always kept, so "memory came back after recovery" is exact.
Whatever needs every event again (the bundle's prompts and series) streams
the file a second time with `stream()`.
"""

from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import Any

from soak import run_folder
from soak.analysis.oracle_verdict import OracleTally
from soak.analysis.streaming import SERIES_CAP, Decimator
from soak.run_folder import EventReader

# Iteration and memory events keep only these fields in the series: the
# numbers and statuses the verdicts, gate and plots use.  Prompts and outputs
# (long text) stay on disk.
SLIM_ITERATION_FIELDS = frozenset({
    "event", "seq", "t", "i", "conversation", "turn", "max_new_tokens", "status",
    "status_name", "ok", "prompt_tokens", "generated_tokens", "prefill_us", "decode_us", "prefill_tps",
    "decode_tps", "wall_s", "context_tokens", "output_bytes", "worker_generation", "backend_actual",
    "ttft_s", "itl_p50_s", "itl_p99_s", "itl_max_s",
})
SLIM_MEMORY_FIELDS = frozenset({
    "event", "seq", "t", "source", "iteration", "generation", "rss", "uss", "pss", "gpu_live_bytes",
    "conversation", "turn", "context_tokens",
})


def _slim(event: dict, keep: frozenset) -> dict:
    """The event with only `keep`, its keys and short strings shared (interned)."""
    return {sys.intern(k): (sys.intern(v) if isinstance(v, str) and len(v) <= 32 else v)
            for k, v in event.items() if k in keep and isinstance(k, str)}


_SLIM_ITERATION = tuple(sorted(SLIM_ITERATION_FIELDS))
_NOT_KEPT = ("iteration", "memory", "oracle_turn")   # event types the pass thins or folds, never keeps whole
_SLIM_MEMORY = tuple(sorted(SLIM_MEMORY_FIELDS))


def _slim_line(raw: bytes, keep: tuple) -> dict | None:
    """_slim(decode_line(raw)) without checking the fields it drops: one
    series sample of a long run (the same dict: sanitize is per field)."""
    ev = run_folder.loads_line(raw)
    if ev is None:
        return None
    out = {k: ev[k] for k in keep if k in ev}
    for k, v in out.items():
        if v.__class__ is str and len(v) <= 32:
            out[k] = sys.intern(v)
    run_folder.sanitize(out)
    rid = ev.get("run_id")
    return out, (rid if isinstance(rid, str) else None)


class RunFolder:
    """A run folder, read lazily in one streaming pass.  BadInput if `path`
    is not one, or if its event log is damaged (file:line)."""

    def __init__(self, path: str | Path, series_cap: int = SERIES_CAP, companion=None):
        """companion: a factory of another reducer of soak.run_folder.reduce_lines
        (e.g. the classifier's scan) to feed in the same pass over the events."""
        self.path = run_folder.require(path)
        self.series_cap = series_cap
        self._companion = companion
        self._companion_result = None

    # --- files -----------------------------------------------------------------
    @cached_property
    def manifest(self) -> dict:
        return run_folder.read_manifest(self.path) or {}

    @cached_property
    def summary(self) -> dict:
        return run_folder.read_json(self.path / run_folder.SUMMARY) or {}

    @cached_property
    def classification(self) -> dict | None:
        return run_folder.read_json(self.path / run_folder.CLASSIFICATION)

    @cached_property
    def state(self) -> str:
        """run_folder.state: running, complete or ended_without_run_end."""
        return run_folder.state(self.path)

    # --- the pass ------------------------------------------------------------------
    def stream(self, kinds=None) -> Iterator[dict]:
        """Every event (of `kinds`) again, streaming: for consumers that need
        the whole events (prompts, full series)."""
        return iter(EventReader(self.path, kinds))

    @cached_property
    def _pass(self) -> dict:
        companion = self._companion
        where = str(self.path / run_folder.EVENTS)
        make = ((lambda: [_Series(self.series_cap, where), companion()]) if companion
                else (lambda: [_Series(self.series_cap, where)]))
        reducers = run_folder.reduce_lines(self.path, make)
        if companion:
            self._companion_result = reducers[1]
        return reducers[0].result(self.path)

    @property
    def companion(self):
        """The reducer `companion` made, fed by the same pass (merged over the parts of the file)."""
        self._pass
        return self._companion_result

    # --- what the pass kept ----------------------------------------------------------
    @property
    def notable(self) -> list[dict]:
        """Every event but `iteration`, `memory`, `oracle_turn` and `cl_profile`, in file order."""
        return self._pass["notable"]

    @property
    def oracle_tally(self) -> OracleTally:
        """The `oracle_turn` events, folded (soak.analysis.oracle_verdict)."""
        return self._pass["oracle"]

    @property
    def iteration_series(self) -> list[dict]:
        """Iteration events without their text, in order; evenly thinned past SERIES_CAP."""
        return self._pass["iterations"].items

    @property
    def memory_samples(self) -> list[tuple[int, dict]]:
        """(segment, memory event without text) in file order; a segment
        starts at every worker start and recovery; evenly thinned past
        2 x SERIES_CAP, the samples next to each recovery always kept."""
        return self._pass["memory"]

    @property
    def memory_events(self) -> list[dict]:
        return [e for _, e in self.memory_samples]

    @property
    def iterations_seen(self) -> int:
        """iteration events in the log (all of them, not the thinned series)."""
        return self._pass["n_iterations"]

    @property
    def events_seen(self) -> int:
        """Every event in the log (iteration and memory events counted, not kept)."""
        return len(self.notable) + self._pass["n_iterations"] + self._pass["n_memory"] + self.oracle_tally.checked

    @property
    def event_kinds(self) -> set:
        kinds = {e.get("event") for e in self.notable}
        if self._pass["n_iterations"]:
            kinds.add("iteration")
        if self._pass["n_memory"]:
            kinds.add("memory")
        if self.oracle_tally.checked:
            kinds.add("oracle_turn")
        return kinds

    @property
    def run_id(self) -> str:
        return str(self._pass["run_id"] or self.manifest.get("run_id") or self.path.name)

    def of(self, kind: str) -> list[dict]:
        """Events of one kind (not iteration or memory: see the series)."""
        if kind in _NOT_KEPT:
            raise ValueError(f"{kind} events are streamed (RunFolder.stream), thinned (the series) or folded")
        return [e for e in self.notable if e.get("event") == kind]

    @cached_property
    def faults(self) -> list[dict]:
        return self.of("fault")

    @cached_property
    def recoveries(self) -> list[dict]:
        return self.of("recovery")

    def first(self, kind: str) -> dict | None:
        return next((e for e in self.notable if e.get("event") == kind), None)

    @property
    def run_end(self) -> dict | None:
        return self.first("run_end")

    @property
    def seed(self) -> Any:
        start = self.first("run_start") or {}
        return start.get("seed", self.manifest.get("seed"))

    @property
    def iteration_count(self) -> int:
        end = self.run_end or {}
        n = end.get("iterations")
        if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
            return n
        return self.iterations_seen

    @property
    def elapsed_s(self) -> float | None:
        end = self.run_end or {}
        v = end.get("elapsed_s")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        t = self._pass["t_max"]
        return float(t) if t is not None else None

    @property
    def backend_requested(self) -> str | None:
        start = self.first("run_start") or {}
        cfg = self.manifest.get("config")
        return _text(start.get("backend")) or _text(self.manifest.get("backend")) or \
            (_text(cfg.get("backend")) if isinstance(cfg, dict) else None)

    @property
    def backend_actual(self) -> str | None:
        if _text(self.manifest.get("backend_actual")):
            return self.manifest["backend_actual"]
        loads = [e for e in self.of("load") if _text(e.get("backend_actual"))]
        return loads[-1]["backend_actual"] if loads else None

    # --- engine.log --------------------------------------------------------------
    def log_bytes(self, start, end, limit: int = 1 << 20) -> bytes:
        path = self.path / run_folder.ENGINE_LOG
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end)):
            return b""
        if not path.is_file() or end <= start:
            return b""
        start = max(0, start)
        end = min(end, start + limit)
        with path.open("rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def cl_trace_files(self) -> list[Path]:
        return sorted(p for p in self.path.glob(run_folder.CL_TRACE_GLOB) if p.is_file())


def _text(v) -> str | None:
    return v if isinstance(v, str) and v else None


class _Series:
    """RunFolder's reduction of the event lines (a soak.run_folder.reduce_lines
    reducer): the notable events, the thinned iteration and memory series,
    counts, and the memory samples next to each recovery.  Lines the thinned
    series will not keep are counted, not decoded.  Parts of a split file
    merge in order: memory sample numbers and segments are offset by the
    part before, and a recovery at a part's edge gets the sample on the
    other side."""

    def __init__(self, cap: int = SERIES_CAP, where: str = run_folder.EVENTS):
        self.where = where               # events.jsonl's path, for messages
        self.notable: list[dict] = []
        self.its = Decimator(cap)
        self.mem = Decimator(2 * cap)    # every source together (per-iteration and timer samples)
        self.oracle = OracleTally(cap)   # the teacher-forced turns
        self.forced: dict[int, tuple] = {}  # order -> (order, seg, memory sample): kept around recoveries
        self.seg = 0                     # a segment starts at every worker start and recovery
        self.n_mem = 0
        self.want_next_mem = False
        self.last_mem = None             # (order, seg, sample or None, raw line or None) of the last memory sample
        self.first_mem = None            # (order, seg, sample) of the part's first memory sample (not the first part)
        self.recovery_first = False      # a recovery before any memory sample of the part
        self.last_raw = None             # the last line counted, not decoded (its t may be the run's last)
        self.run_id = None
        self.t_max = None
        self.start = 0

    def _seen(self, e: dict) -> None:
        t = e.get("t")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and (self.t_max is None or t > self.t_max):
            self.t_max = t
        if self.run_id is None and isinstance(e.get("run_id"), str) and e["run_id"]:
            self.run_id = e["run_id"]

    def feeder(self, start: int):
        self.start = start
        its, mem = self.its, self.mem
        ITER, MEM, PROF = b"iteration", b"memory", b"cl_profile"  # cl_profile: several per iteration, streamed by soak.analysis.profile

        def sample(raw: bytes, keep: tuple) -> dict:
            got = _slim_line(raw, keep)
            if got is None:
                raise run_folder.Damaged(raw)
            e, rid = got
            t = e.get("t")
            if t is not None and (self.t_max is None or t > self.t_max):
                self.t_max = t
            if self.run_id is None and rid:
                self.run_id = rid
            return e

        def iterations(lines: list, idx: list) -> None:
            """Iteration lines of a stretch with no notable event: counted, every stride-th decoded."""
            base, c, k = its.count, len(idx), 0
            while True:
                nxt = k + (-(base + k)) % its.stride  # the next whose number is a multiple of the stride
                if nxt >= c:
                    break
                its.count = base + nxt
                its.add(sample(lines[idx[nxt]], _SLIM_ITERATION))  # may double the stride
                k = nxt + 1
            its.count = base + c

        def memory(lines: list, idx: list) -> None:
            """Memory lines of a stretch with no notable event (one segment)."""
            base, c, k = mem.count, len(idx), 0
            order0, seg = self.n_mem, self.seg
            if (start > 0 and self.first_mem is None) or self.want_next_mem:  # the first one is needed whole
                got = (order0, seg, sample(lines[idx[0]], _SLIM_MEMORY))
                mem.add(got)
                if start > 0 and self.first_mem is None:
                    self.first_mem = got
                if self.want_next_mem:
                    self.forced[order0] = got
                    self.want_next_mem = False
                k = 1
            while True:
                nxt = k + (-(base + k)) % mem.stride
                if nxt >= c:
                    break
                mem.count = base + nxt
                mem.add((order0 + nxt, seg, sample(lines[idx[nxt]], _SLIM_MEMORY)))
                k = nxt + 1
            mem.count = base + c
            self.n_mem = order0 + c
            self.last_mem = (order0 + c - 1, seg, None, lines[idx[-1]])

        def stretch(kinds: list, lines: list, a: int, b: int) -> None:
            its_idx = [k for k in range(a, b) if kinds[k] == ITER]
            mem_idx = [k for k in range(a, b) if kinds[k] == MEM]
            if its_idx:
                iterations(lines, its_idx)
            if mem_idx:
                memory(lines, mem_idx)
            last = max(its_idx[-1] if its_idx else -1, mem_idx[-1] if mem_idx else -1)
            if last >= 0:
                self.last_raw = lines[last]

        def notable(raw: bytes) -> None:
            e = run_folder.decode_line(raw)
            if e is None:
                raise run_folder.Damaged(raw)
            self._seen(e)
            etype = e.get("event")
            if etype == "oracle_turn":   # one per checked turn: grows with the run, so folded
                self.oracle.add(e)
                return
            if etype == "run_start":
                run_folder.check_schema(e.get("schema"), f"{self.where} (run_start)")
            if etype in ("worker_start", "recovery"):
                self.seg += 1
            if etype == "recovery":
                if self.last_mem is not None:
                    self._force_last()
                elif start > 0 and self.n_mem == 0:
                    self.recovery_first = True  # the sample before it is the previous part's
                self.want_next_mem = True
            self.notable.append(e)

        def feed(kinds: list, lines: list) -> None:
            pos = 0
            for k in [k for k, kind in enumerate(kinds) if kind != ITER and kind != MEM and kind != PROF]:
                if k > pos:
                    stretch(kinds, lines, pos, k)
                notable(lines[k])
                pos = k + 1
            if pos < len(lines):
                stretch(kinds, lines, pos, len(lines))
        return feed

    def _force_last(self) -> None:
        order, seg, sample, raw = self.last_mem
        if sample is None:  # counted, not decoded: decode it now
            ev = run_folder.decode_line(raw)
            if ev is None:
                return
            sample = (order, seg, _slim(ev, SLIM_MEMORY_FIELDS))
        self.forced[order] = sample

    def merge(self, other: "_Series") -> None:
        off, seg_off = self.n_mem, self.seg

        def shift(sample):
            return (sample[0] + off, sample[1] + seg_off, sample[2])

        if other.recovery_first and self.last_mem is not None:
            self._force_last()
        if self.want_next_mem and other.first_mem is not None:
            self.forced[other.first_mem[0] + off] = shift(other.first_mem)
        for order, sample in other.forced.items():
            self.forced[order + off] = shift(sample)
        other.mem.items = [shift(s) for s in other.mem.items]
        self.mem.merge(other.mem)
        self.its.merge(other.its)
        self.oracle.merge(other.oracle)
        self.notable.extend(other.notable)
        if other.last_mem is not None:
            o, sg, sample, raw = other.last_mem
            self.last_mem = (o + off, sg + seg_off, shift(sample) if sample is not None else None, raw)
        self.want_next_mem = other.want_next_mem or (self.want_next_mem and other.first_mem is None
                                                     and other.n_mem == 0)
        self.n_mem += other.n_mem
        self.seg += other.seg
        self.last_raw = other.last_raw if other.last_raw is not None else self.last_raw
        self.run_id = self.run_id or other.run_id
        if other.t_max is not None and (self.t_max is None or other.t_max > self.t_max):
            self.t_max = other.t_max

    def result(self, path: Path) -> dict:
        samples = {s[0]: s for s in self.mem.items}
        samples.update(self.forced)
        memory = [(seg, ev) for _, seg, ev in sorted(samples.values(), key=lambda s: s[0])]
        t_max = self.t_max
        last = run_folder.decode_line(self.last_raw) if self.last_raw is not None else None
        t = (last or {}).get("t")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and (t_max is None or t > t_max):
            t_max = t
        return {"notable": self.notable, "iterations": self.its, "oracle": self.oracle, "memory": memory,
                "run_id": self.run_id, "t_max": t_max, "n_iterations": self.its.count, "n_memory": self.n_mem}

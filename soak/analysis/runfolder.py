"""A run folder as the analyses and outputs see it: one streaming pass, bounded memory.

Everything after the engine reads only the run folder (docs/ARCHITECTURE.md),
through soak.run_folder (names, schema, the one event reader).  `RunFolder`
reads events.jsonl once, line by line, and keeps what the verdicts, gate,
bundle and report ask of it in memory that does not grow with the run:

- `notable`: every event except `iteration`, `memory` and `cl_profile` (the
  interposer's profile windows, several per iteration: `stream()` them) (faults, recoveries,
  loads, worker starts, run_start/run_end): these grow with the faults, not
  with the iterations;
- `iteration_series` and `memory_samples`: the iteration and memory events
  without their long text, thinned by `Decimator` to at most
  `SERIES_CAP` each (every event while the run is shorter; a long run keeps
  every k-th, k a power of two, so the samples stay evenly spaced);
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


class RunFolder:
    """A run folder, read lazily in one streaming pass.  BadInput if `path`
    is not one, or if its event log is damaged (file:line)."""

    def __init__(self, path: str | Path, series_cap: int = SERIES_CAP):
        self.path = run_folder.require(path)
        self.series_cap = series_cap

    # --- files -----------------------------------------------------------------
    @cached_property
    def manifest(self) -> dict:
        return run_folder.read_json(self.path / run_folder.MANIFEST) or {}

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
        notable: list[dict] = []
        its = Decimator(self.series_cap)
        mem = Decimator(2 * self.series_cap)  # every source together (per-iteration and timer samples)
        forced: dict[int, tuple] = {}   # order -> (order, seg, memory sample), kept around recoveries
        st = {"seg": 0, "n_mem": 0, "want_next_mem": False}
        last_mem: list = [None, None]    # (order, seg) and the raw line of the last memory sample not decoded
        last_raw: list = [None]          # the last line counted, not decoded (its t may be the run's last)

        def skip(etype: bytes, raw: bytes) -> bool:
            """Lines the thinned series will not keep are counted, not decoded."""
            if etype == b"cl_profile":  # --cl-profile: several per iteration, streamed by soak.analysis.profile
                return True
            if etype == b"iteration":
                if its.wants():
                    return False
                its.count += 1
                last_raw[0] = raw
                return True
            if etype == b"memory":
                if st["want_next_mem"] or mem.wants():
                    return False
                mem.count += 1
                last_mem[0], last_mem[1] = (st["n_mem"], st["seg"]), raw
                st["n_mem"] += 1
                last_raw[0] = raw
                return True
            return False

        run_id = None
        t_max = None
        for e in EventReader(self.path, skip=skip):
            etype = e.get("event")
            t = e.get("t")
            if isinstance(t, (int, float)) and not isinstance(t, bool) and (t_max is None or t > t_max):
                t_max = t
            if run_id is None and isinstance(e.get("run_id"), str) and e["run_id"]:
                run_id = e["run_id"]
            if etype == "iteration":
                its.add(_slim(e, SLIM_ITERATION_FIELDS))
                continue
            if etype == "memory":
                sample = (st["n_mem"], st["seg"], _slim(e, SLIM_MEMORY_FIELDS))
                st["n_mem"] += 1
                mem.add(sample)
                if st["want_next_mem"]:
                    forced[sample[0]] = sample
                    st["want_next_mem"] = False
                last_mem[0], last_mem[1] = sample, None
                continue
            if etype == "run_start":
                run_folder.check_schema(e.get("schema"), f"{self.path / run_folder.EVENTS} (run_start)")
            if etype in ("worker_start", "recovery"):
                st["seg"] += 1
            if etype == "recovery":
                if last_mem[1] is not None:  # the sample before it was counted, not decoded: decode it now
                    ev = run_folder.decode_line(last_mem[1])
                    if ev is not None:
                        order, seg = last_mem[0]
                        forced[order] = (order, seg, _slim(ev, SLIM_MEMORY_FIELDS))
                elif last_mem[0] is not None:
                    forced[last_mem[0][0]] = last_mem[0]
                st["want_next_mem"] = True
            notable.append(e)
        samples = {s[0]: s for s in mem.items}
        samples.update(forced)
        memory = [(seg_, ev) for _, seg_, ev in sorted(samples.values(), key=lambda s: s[0])]
        last = run_folder.decode_line(last_raw[0]) if last_raw[0] is not None else None
        t = (last or {}).get("t")
        if isinstance(t, (int, float)) and not isinstance(t, bool) and (t_max is None or t > t_max):
            t_max = t
        return {"notable": notable, "iterations": its, "memory": memory, "run_id": run_id,
                "t_max": t_max, "n_iterations": its.count, "n_memory": st["n_mem"]}

    # --- what the pass kept ----------------------------------------------------------
    @property
    def notable(self) -> list[dict]:
        """Every event but `iteration` and `memory`, in file order."""
        return self._pass["notable"]

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
        return len(self.notable) + self._pass["n_iterations"] + self._pass["n_memory"]

    @property
    def event_kinds(self) -> set:
        kinds = {e.get("event") for e in self.notable}
        if self._pass["n_iterations"]:
            kinds.add("iteration")
        if self._pass["n_memory"]:
            kinds.add("memory")
        return kinds

    @property
    def run_id(self) -> str:
        return str(self._pass["run_id"] or self.manifest.get("run_id") or self.path.name)

    def of(self, kind: str) -> list[dict]:
        """Events of one kind (not iteration or memory: see the series)."""
        if kind in ("iteration", "memory"):
            raise ValueError(f"{kind} events are streamed (RunFolder.stream) or thinned (the series)")
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
        return sorted(p for p in self.path.glob("cl_trace.*") if p.is_file())


def _text(v) -> str | None:
    return v if isinstance(v, str) and v else None

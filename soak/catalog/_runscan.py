"""Read a run folder into findings: fault events grouped by signature, plus
the faults the classifier derives (memory growth and kept from the memory
verdict, tok/s rising while kernels fail, context past the model's length).
Reads only the run folder.

Speed and memory (10 million iterations: benchmarks/bench_analysis_scale.py):
the scan is a reducer of soak.run_folder.reduce_lines (one pass, split over
processes, possibly shared with the verdicts' pass); only the types used
here are decoded, iteration lines only for the few fields needed; each fault
is keyed with a cached normalization, so matching later runs once per
finding.  What it keeps grows with the faults, not with the iterations.
"""

from __future__ import annotations

import re
from pathlib import Path

from soak import backtrace, fault_kinds, run_folder
from soak.analysis.streaming import Intervals, Reservoir
from soak.catalog import _derived, _rawlog
from soak.catalog import _eventread as R
from soak.catalog._finding import Finding
from soak.catalog.signature import fault_key, normalize_tag, param_of, signal_name, signature_id, signature_text
from soak.logparse import is_fault, parse_line

_FAULT_EVENT_NAMES = frozenset(name.encode() for name in fault_kinds.FAULT_EVENTS)  # what counts as a fault

_TEXT_CAP = 24  # lines of text kept per finding for `log` matchers



_WINDOW = 4096      # iterations whose (turn, context) stay at hand: the first ones, and the latest ones
TPS_CAP = 1 << 16     # decode tok/s values kept per class (all of them below it, else a uniform sample)


class Scan:
    """What one pass over a run's events keeps: the findings (which grow
    with the faults), and of the iterations and memory samples (which grow
    with the run) only bounded summaries: the recorded iterations as runs
    of numbers (soak.analysis.streaming.Intervals), each finding's turn and
    context range folded in as its events are read, decode tok/s in
    reservoirs.  Memory samples are not its business: soak.analysis.memory_verdict
    judges them (finish() takes its judgment)."""

    def __init__(self, max_context: int | None = None):
        self.max_context = max_context  # iterations past it are context_overflow
        self.findings: dict[str, Finding] = {}
        self.code_counts: dict[int, int] = {}
        self.recorded = Intervals()                 # the iteration numbers read
        self._head: dict[int, tuple] = {}           # i -> (turn, context_tokens): the first _WINDOW iterations
        self._recent: dict[int, tuple] = {}         # ... the latest ones (two generations of up to _WINDOW)
        self._older: dict[int, tuple] = {}
        self._pending: dict[int, list] = {}         # i -> findings waiting for iteration i
        self.tps_err = Reservoir(TPS_CAP)
        self.tps_clean = Reservoir(TPS_CAP)
        self.err_iters: list[int] = []              # iterations with CL errors: grows with those faults only
        self.err_info: dict = {}                    # their turn and context ranges
        self.over: list[tuple[int, int]] = []       # (i, context_tokens) past max_context (a fault each)
        self.over_info: dict = {}
        self.events = 0
        self.fault_events = 0
        self.load: dict | None = None
        self.loads: list[int] = []      # the bucket (next iteration) of each load: a reload ends a GPU error's state
        self.run_start: dict | None = None
        self.has_cpu_fallback = False
        self.source = run_folder.EVENTS
        self.next_i: int | None = None   # the iteration after the last one read (None: not known yet)
        self._keys: dict[tuple, str] = {}

    # -- grouping -----------------------------------------------------------
    def _finding(self, kind: str, phase, ev: dict) -> Finding:
        key = fault_kinds.key_of(kind)
        if key == "cl":
            k = (kind, phase, ev.get("code"), ev.get("info"))
        elif key == "line":
            k = (kind, phase, ev.get("line") or ev.get("pattern"))
        elif key == "call":
            k = (kind, phase, ev.get("api"), ev.get("code"), bool(ev.get("injected")), param_of(ev))
        else:
            k = None
        text = self._keys.get(k) if k is not None else None
        if text is None:
            text = signature_text(kind, phase, fault_key(kind, ev))
            if k is not None:
                self._keys[k] = text
        f = self.findings.get(text)
        if f is None:
            f = self.findings[text] = _new_finding(text, kind, phase, ev)
        return f

    def add_fault(self, ev: dict) -> Finding | None:
        kind = ev.get("kind")
        if not isinstance(kind, str):
            return None
        phase = ev.get("phase")
        self.fault_events += 1
        f = self._finding(kind, phase, ev)
        c = ev.get("count")
        n = c if isinstance(c, int) and c > 0 else 1
        self._place(f, ev)
        if kind == "cl_error":
            code = ev.get("code")
            if isinstance(code, int):
                self.code_counts[code] = self.code_counts.get(code, 0) + n
        elif kind == "cpu_fallback":
            self.has_cpu_fallback = True
        self._locate(f, ev.get("iteration"))
        f.add(ev, n, tag_of(kind, ev))
        return f

    def add_call_error(self, ev: dict) -> Finding:
        ev = dict(ev, kind="cl_call_error")
        self.fault_events += 1
        f = self._finding("cl_call_error", ev.get("phase"), ev)
        c = ev.get("count")  # the interposer folds a kind of error per iteration: count is exact
        n = c if isinstance(c, int) and c > 0 else 1
        self._place(f, ev)
        self._locate(f, ev.get("iteration"))
        f.add(ev, n, tag_of("cl_call_error", ev))
        code = ev.get("code")
        if isinstance(code, int):
            self.code_counts[code] = self.code_counts.get(code, 0) + n
        return f

    def _place(self, f: Finding, ev: dict) -> None:
        """init/load faults, and records of no iteration (a restarted worker's calls while it
        loads), belong to the iteration after them (file order)."""
        if self.next_i is None:
            return
        it = ev.get("iteration")
        if f.phase in ("init", "load"):
            ev["bucket"] = max(self.next_i, it) if isinstance(it, int) else self.next_i
        elif not isinstance(it, int) and "call_seq" in ev:
            ev["bucket"] = self.next_i

    # -- where an iteration was (turn, context) -----------------------------
    def _info(self, i) -> tuple | None:
        v = self._recent.get(i) or self._older.get(i) or self._head.get(i)
        return _info_of(v) if v.__class__ is bytes else v

    def _locate(self, f: Finding, it) -> None:
        """Fold iteration `it`'s turn and context into the finding's ranges:
        now if the iteration was read, else when it is (faults of an
        iteration come before and after its event)."""
        if not isinstance(it, int) or (f.iterations and f.iterations[-1] == it):
            return  # no iteration, or the one folded last
        info = self._info(it)
        if info is not None:
            _fold(f.ranges, info)
        elif self._may_come(it):
            self._pending.setdefault(it, []).append(f)

    def _may_come(self, i: int) -> bool:
        """Whether iteration i may still be read (by this part, or the one
        before it): not inside the span this part already read, where it was
        either never recorded or is older than the window kept."""
        lo = self.recorded.lo
        return lo is None or i >= self.next_i or i < lo

    def consume(self, path: Path, start: int = 0, end: int | None = None) -> "Scan":
        """Read events.jsonl lines in [start, end) into this scan."""
        run_folder.feed_range(path, [self], start, end)
        return self

    def feeder(self, start: int = 0):
        """feed(kinds, lines) for soak.run_folder.reduce_lines (this scan reads the
        part of the file from byte `start`): a chunk of event lines
        into this scan (the hot loop of a large classification: keep it lean)."""
        decode = run_folder.decode_line
        split_volatile = R.split_volatile
        iteration_fields = R.iteration_fields
        repeats: dict[bytes, tuple] = {}
        add_it, iteration_line = self.add_iteration, self.iteration_line
        code_counts = self.code_counts
        locate, place = self._locate, self._place
        fault_names = _FAULT_EVENT_NAMES
        if start == 0:
            self.next_i = 0

        def _decode(raw: bytes):
            ev = decode(raw)  # a field of the wrong type reads as absent
            if ev is None:
                raise run_folder.Damaged(raw)
            return ev

        def feed(kinds: list, lines: list) -> None:
            self.events += len(lines)
            for kind, raw in zip(kinds, lines):
                if kind == b"iteration":
                    if not iteration_line(raw):
                        add_it(iteration_fields(raw) or _decode(raw))
                elif kind in fault_names:
                    ident, vol = split_volatile(raw, kind == b"cl_call_error")
                    hit = repeats.get(ident)
                    if hit is not None:  # the same fault again: only where and how often
                        f, tag = hit
                        self.fault_events += 1
                        c = vol.get("count")
                        n = c if c is not None and c > 0 else 1
                        if f.code is not None and (f.kind == "cl_error" or f.kind == "cl_call_error"):
                            code_counts[f.code] = code_counts.get(f.code, 0) + n
                        place(f, vol)
                        locate(f, vol.get("iteration"))
                        f.add(vol, n, tag)
                        continue
                    ev = _decode(raw)
                    f = self.add_fault(ev) if kind == b"fault" else self.add_call_error(ev)
                    if f is not None and len(repeats) < 200_000:
                        repeats[ident] = (f, tag_of(f.kind, ev))
                elif kind == b"load":
                    self.load = _decode(raw)
                    if self.next_i is not None:
                        self.loads.append(self.next_i)
                elif kind == b"run_start":
                    self.run_start = _decode(raw)
        return feed

    def merge(self, other: "Scan") -> None:
        """Append a scan of the next part of the same file."""
        for i, targets in list(self._pending.items()):  # waiting for an iteration read by the next part
            info = other._head.get(i) or other._info(i)
            info = _info_of(info) if info.__class__ is bytes else info
            if info is not None:
                _resolve(targets, info)
                del self._pending[i]
        for i, targets in other._pending.items():  # waiting for an iteration read by this part
            info = self._info(i)
            if info is not None:
                _resolve(targets, info)
            else:
                self._pending.setdefault(i, []).extend(targets)
        for text, g in other.findings.items():
            f = self.findings.get(text)
            if f is None:
                self.findings[text] = g
                continue
            f.events += g.events
            f.count += g.count
            its = g.iterations
            if its and f.iterations and f.iterations[-1] == its[0]:
                its = its[1:]
            f.iterations.extend(its)
            f.first_seq = f.first_seq if f.first_seq is not None else g.first_seq
            f.last_seq = g.last_seq if g.last_seq is not None else f.last_seq
            f.first_t = f.first_t if f.first_t is not None else g.first_t
            f.last_t = g.last_t if g.last_t is not None else f.last_t
            for tag, n in g.tags.items():
                f.tags[tag] = f.tags.get(tag, 0) + n
            for b, (key, n) in g.where.items():
                w = f.where.get(b)
                if w is None:
                    f.where[b] = [key, n]
                else:
                    w[1] += n
            _merge_ranges(f.ranges, g.ranges)
        for code, n in other.code_counts.items():
            self.code_counts[code] = self.code_counts.get(code, 0) + n
        self.recorded.merge(other.recorded)
        for i, info in other._head.items():
            if len(self._head) >= _WINDOW:
                break
            self._head.setdefault(i, info)
        latest = {**self._older, **self._recent, **other._older, **other._recent}
        if len(latest) > 2 * _WINDOW:
            latest = dict(list(latest.items())[-2 * _WINDOW:])
        self._older, self._recent = latest, {}
        self.next_i = other.next_i if other.next_i is not None else self.next_i
        self.tps_err.merge(other.tps_err)
        self.tps_clean.merge(other.tps_clean)
        self.err_iters.extend(other.err_iters)
        _merge_ranges(self.err_info, other.err_info)
        self.over.extend(other.over)
        _merge_ranges(self.over_info, other.over_info)
        self.events += other.events
        self.fault_events += other.fault_events
        self.load = other.load or self.load
        self.loads.extend(other.loads)
        self.run_start = self.run_start or other.run_start
        self.has_cpu_fallback = self.has_cpu_fallback or other.has_cpu_fallback

    def iteration_line(self, raw: bytes) -> bool:
        """add_iteration for a line in EventLog's layout, reading only what it
        needs: the number, whether it had CL errors or failed, its tok/s when
        a reservoir takes it, its context when max_context is known.  Its
        (turn, context) are read from the line only when asked for (the
        windows keep the line).  False when the line is not in that layout
        (the caller decodes it)."""
        find = raw.find
        j = find(b'"i": ')
        if j < 0:
            return False
        try:
            i = int(raw[j + 5:find(b",", j)])
        except ValueError:
            return False
        self.next_i = i + 1
        runs = self.recorded.runs
        if runs and runs[-1][1] + 1 == i:
            runs[-1][1] = i
        else:
            self.recorded.add(i)
        self._keep(i, raw)
        if self._pending:
            waiting = self._pending.pop(i, None)
            if waiting:
                _resolve(waiting, _info_of(raw))
        limit = self.max_context
        if limit:
            c = find(b'"context_tokens": ')
            try:
                ctx = int(raw[c + 18:find(b",", c)]) if c >= 0 else None
            except ValueError:
                ctx = _info_of(raw)[1]
            if isinstance(ctx, int) and ctx > limit:
                info = _info_of(raw)
                self.over.append((i, info[1]))
                _fold(self.over_info, info)
        rfind = raw.rfind  # both lists come late in the line: look from its end
        if rfind(b'"cl_errors": []') < 0:
            tps = _tps(raw)
            if tps is not None:
                self.tps_err.add(tps)
                self.err_iters.append(i)
                _fold(self.err_info, _info_of(raw))
            return True
        k = find(b'"ok": ')
        if (k < 0 or raw[k + 6:k + 10] == b"true") and rfind(b'"failures": []') >= 0:
            res = self.tps_clean
            n = res.count
            if n < res.cap or n == res._next:
                tps = _tps(raw)
                if tps is not None:
                    res.add(tps)
            else:  # past the cap, not drawn: counted (a clean iteration has tok/s) without reading it
                res.count = n + 1
        return True

    def _keep(self, i: int, record) -> None:
        """Iteration i's record (its raw line, or (turn, context_tokens)) into the latest windows
        and, among the first _WINDOW iterations, the head; a repeated i keeps its latest record in
        both, as the raw and the decoded path alike."""
        recent = self._recent
        recent[i] = record
        if len(recent) >= _WINDOW:
            self._older, self._recent = recent, {}
        head = self._head
        if len(head) < _WINDOW or i in head:
            head[i] = record

    def add_iteration(self, ev: dict) -> None:
        i = ev.get("i")
        if not isinstance(i, int):
            return
        self.next_i = i + 1
        info = (ev.get("turn"), ev.get("context_tokens"))
        self.recorded.add(i)
        self._keep(i, info)
        if self._pending:
            waiting = self._pending.pop(i, None)
            if waiting:
                _resolve(waiting, info)
        ctx = info[1]
        if self.max_context and isinstance(ctx, int) and ctx > self.max_context:
            self.over.append((i, ctx))
            _fold(self.over_info, info)
        tps = ev.get("decode_tps")
        if isinstance(tps, (int, float)) and tps > 0:
            if ev.get("cl_errors"):
                self.tps_err.add(float(tps))
                self.err_iters.append(i)
                _fold(self.err_info, info)
            elif ev.get("ok", True) and not ev.get("failures"):
                self.tps_clean.add(float(tps))

    @property
    def iteration_bounds(self) -> list[tuple]:
        """(i, (turn, context)) of the lowest and the highest iteration read."""
        rec = self.recorded
        return [] if not rec else [(rec.lo, self._info(rec.lo)), (rec.hi, self._info(rec.hi))]

    def retained(self) -> int:
        """How many entries the scan holds apart from its findings (the
        state that must not grow with the number of iterations)."""
        return (len(self.recorded.runs) + len(self._head) + len(self._recent) + len(self._older)
                + sum(len(v) for v in self._pending.values()) + len(self.tps_err.items)
                + len(self.tps_clean.items) + len(self.err_iters) + len(self.over))

    # -- after the pass -----------------------------------------------------
    def finish(self, backend_requested: str | None, backend_actual: str | None,
               memory: dict | None = None) -> list[Finding]:
        """The findings, with those derived from the whole run; `memory`: the run's memory
        judgment (soak.analysis.memory_verdict.memory_verdicts), None for a log without one."""
        _derived.cpu_fallback(self, backend_requested, backend_actual)
        _derived.memory_findings(self, memory)
        _derived.tps_up_with_errors(self)
        _derived.context_overflow(self, self.max_context)
        for f in self.findings.values():
            self._ranges(f)
        return sorted(self.findings.values(),
                      key=lambda f: (f.first_seq if f.first_seq is not None else 1 << 62, f.signature_text))

    @staticmethod
    def _ranges(f: Finding) -> None:
        """The iteration range, then the turn and context ranges folded in as the events were read."""
        folded = f.ranges
        f.ranges = {}
        if not f.iterations:
            return
        f.ranges["iteration"] = (min(f.iterations), max(f.iterations))
        for k in ("turn", "context_tokens", "first_step"):
            if k in folded:
                f.ranges[k] = folded[k]

    def add_derived(self, kind: str, phase, ev: dict, iterations: list[int], extra: dict,
                    count: int | None = None, infos=(), ranges: dict | None = None) -> Finding:
        """A fault the classifier derives (no event of its own): `count` is
        how many times it happened (default: once per iteration listed);
        `infos` the (turn, context) of those iterations, or `ranges` their
        turn and context ranges already folded."""
        f = self._finding(kind, phase, ev)
        for i in iterations:
            f.add({"iteration": i}, 1)
        if not iterations:
            f.add({})
        for info in infos:
            if info is not None:
                _fold(f.ranges, info)
        if ranges:
            _merge_ranges(f.ranges, ranges)
        if count is not None:
            f.count = f.events = count
        if kind in ("memory_growth", "memory_kept"):  # a trend over the run: no place in one iteration
            f.where.clear()
        f.extra.update(extra)
        return f


def _fold(ranges: dict, info: tuple) -> None:
    turn, ctx = info
    if isinstance(turn, int):
        r = ranges.get("turn")
        ranges["turn"] = (turn, turn) if r is None else (min(r[0], turn), max(r[1], turn))
    if isinstance(ctx, int):
        r = ranges.get("context_tokens")
        ranges["context_tokens"] = (ctx, ctx) if r is None else (min(r[0], ctx), max(r[1], ctx))


def _merge_ranges(into: dict, other: dict) -> None:
    for k in ("turn", "context_tokens", "first_step"):
        r = other.get(k)
        if r is not None:
            mine = into.get(k)
            into[k] = r if mine is None else (min(mine[0], r[0]), max(mine[1], r[1]))


def _info_of(raw: bytes) -> tuple:
    """(turn, context_tokens) of an iteration line."""
    ev = R.iteration_fields(raw) or run_folder.decode_line(raw) or {}
    return (ev.get("turn"), ev.get("context_tokens"))


def _tps(raw: bytes) -> float | None:
    """decode_tps of an iteration line when it is a positive number."""
    j = raw.find(b'"decode_tps": ')
    if j < 0:
        return None
    j += 14
    k, e = raw.find(b",", j), raw.find(b"}", j)
    try:
        v = float(raw[j:e if k < 0 or 0 <= e < k else k])
    except ValueError:  # null
        return None
    return v if v > 0 and v != float("inf") else None


def _resolve(targets: list, info: tuple) -> None:
    """Give iteration info to what waited for it: a finding's ranges."""
    for t in targets:
        _fold(t.ranges, info)


_KERNEL_RE = re.compile(r"kernel=(\S+)")


def tag_of(kind: str, ev: dict) -> str | None:
    """What tells occurrences of one finding apart inside it: MNN's info tag
    of a CL ERROR line, the kernel of a failed NDRange, the param of a probe."""
    if kind == "cl_error":
        return normalize_tag(str(ev.get("info") or "")) or None
    if kind == "cl_call_error":
        k = ev.get("kernel")
        if isinstance(k, str) and k:
            return k
        m = _KERNEL_RE.search(str(ev.get("detail") or ""))
        return m.group(1) if m else None
    return None


def _new_finding(text: str, kind: str, phase, ev: dict) -> Finding:
    code = ev.get("code") if isinstance(ev.get("code"), int) else None
    f = Finding(signature=signature_id(text), signature_text=text, kind=kind, phase=phase,
                code=code, info=str(ev.get("info") or "") if kind == "cl_error" else None,
                api=ev.get("api"), pattern=ev.get("pattern") if kind == "error_line" else None,
                signal=signal_name(ev.get("signal")),
                exit_code=ev.get("exit_code") if isinstance(ev.get("exit_code"), int) else None,
                status=ev.get("status") if isinstance(ev.get("status"), int) else None,
                status_name=ev.get("status_name"),
                symptoms=frozenset(ev.get("symptoms") or ()), resource=ev.get("resource"),
                symptom=ev.get("symptom"), injected=bool(ev.get("injected")),
                param_name=param_of(ev),
                minor=kind == "slowdown" or kind == "error_line" and ev.get("severity") in ("warning", "info"))
    texts: list[str] = []
    for key in ("line", "error"):
        if isinstance(ev.get(key), str):
            texts.append(ev[key])
    lines = ev.get("last_lines")
    if isinstance(lines, str):
        lines = lines.splitlines()
    if isinstance(lines, list):
        texts.extend(str(x) for x in lines[-_TEXT_CAP:])
    if fault_kinds.key_of(kind) == "death":
        bt = ev.get("backtrace") if isinstance(ev.get("backtrace"), list) else None
        f.frames = tuple(backtrace.frame_names(str(x) for x in (bt or (lines if isinstance(lines, list) else []))))
        texts.extend(str(x) for x in (bt or ())[:_TEXT_CAP])
    if kind == "cl_error" and ev.get("code") is not None and not texts:
        texts.append(f"CL ERROR CODE : {ev.get('code')}, info:{ev.get('info') or ''}")
    f.texts = texts
    f.sample = {k: v for k, v in ev.items() if k not in ("run_id", "ts")}
    if isinstance(f.sample.get("last_lines"), list):
        f.sample["last_lines"] = f.sample["last_lines"][-_TEXT_CAP:]
    return f


def scan_run(run_dir: Path, jobs: int | None = None, max_context: int | None = None) -> Scan:
    """One pass over events.jsonl (soak.run_folder.reduce_lines: a large file
    is split over forked processes and the parts merged in order), or,
    without it, over engine.log lines.  `max_context`: the model's context
    length (iterations past it are context_overflow)."""
    events = run_dir / run_folder.EVENTS
    if events.is_file():
        return run_folder.reduce_lines(events, scan_maker(max_context), jobs)[0]
    scan = Scan(max_context=max_context)
    log = run_dir / run_folder.ENGINE_LOG
    if log.is_file():
        scan.source = run_folder.ENGINE_LOG
        _scan_log(scan, log)
    return scan


class scan_maker:
    """The reducer factory of reduce_lines for a classification (picklable)."""

    def __init__(self, max_context: int | None = None):
        self.max_context = max_context

    def __call__(self) -> list:
        return [self.one()]

    def one(self) -> Scan:
        return Scan(self.max_context)


def _scan_log(scan: Scan, log: Path) -> None:
    """A run folder without events: its engine.log is the engine's stdout."""
    scan_raw(scan, _rawlog.read(log, strict=False))


def scan_raw(scan: Scan, log: "_rawlog.RawLog") -> Scan:
    """A log soak did not record: every line in one place (no iterations),
    in file order; a fatal signal is a crash with the lines before it."""
    for offset, line in log.lines:
        got = parse_line(line)
        if not is_fault(got):
            continue
        ev = {"kind": got["kind"], "phase": None, "line": line, "offset": offset, "seq": offset, "bucket": 0}
        for k in ("code", "pattern", "severity", "requested_type", "used_type"):
            if k in got:
                ev[k] = got[k]
        if got["kind"] == "cl_error":
            ev["info"], ev["name"] = got["info"], got["name"]
        scan.add_fault(ev)
    for c in log.crashes:
        crash = {"kind": "crash", "phase": None, "signal": c["signal"], "exit_code": None,
                 "last_lines": c["last_lines"], "seq": c["offset"], "offset": c["offset"], "bucket": 0}
        if c.get("backtrace"):
            crash["backtrace"] = c["backtrace"][:64]
        scan.add_fault(crash)
    return scan

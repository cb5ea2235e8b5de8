"""Where each phase's time went, from a --cl-profile run's `cl_profile` events.

The interposer writes one `profile` record per window: (poll epoch, phase), the phase marked by
the worker (load, prefill until the first generated text, decode, idle; `respond` when the
engine gives no first-token mark).  Per phase this module sums:

  kernels     device time of clEnqueueNDRangeKernel commands (top kernels by time)
  transfers   device time and bytes of reads/writes/maps/copies/fills (GB/s)
  idle        device gaps between commands inside a window (the device waiting for the host:
              launch-bound when large)
  host-only   the window's host span (first CL call in, last CL call out) beyond its device
              span (first timed command's start to the last one's end), less the estimated
              device time of untimed commands enqueued outside it (`outside_ns`): host work
              while the device had nothing queued
The interposer times some kernel launches (1 in N: `rate` in the record, launches per timed one;
by default adapted per kernel name and phase so that the profiler's own host time, `cost_ns`,
stays within `budget_pct` of the phase's wall time; --cl-profile-sample alone: a fixed 1 in N)
and gives the others their kernel's mean (`estimated_ns`; `timed` per command); idle is the
device span left once busy time inside it (measured plus estimated) is taken out.  The report says how
much was estimated, the rate and what the profiler cost.
It compares kernels + transfers + other + idle + host-only with the phase time the engine
measured (perf: load_us, prefill_us, decode_us): the closure figure.  Host API time (inside CL
calls) is reported beside it; it overlaps the device time, so it is not added.

Given a CPU run of the same seeded workload, `explain` says per phase which part makes the GPU
slower.  Reads only the run folder (events), never the engine.
"""

from __future__ import annotations

import bisect
import datetime as _dt
from collections import defaultdict, deque

from soak.analysis.loaded_run import RunFolder
from soak.phases import PROFILE_PHASE_ORDER, profile_phase

KERNEL_API = "clEnqueueNDRangeKernel"
CLOSURE_TOLERANCE = 0.10
TOP_KERNELS = 10


def phase_of(event: dict) -> str:
    return profile_phase(event.get("phase"))


def _new_phase() -> dict:
    return {"windows": 0, "kernels_ns": 0, "kernel_count": 0, "transfers_ns": 0, "transfer_bytes": 0,
            "transfer_count": 0, "other_ns": 0, "other_count": 0, "busy_ns": 0, "idle_ns": 0, "span_ns": 0,
            "host_span_ns": 0, "host_only_ns": 0, "host_api_ns": 0, "untimed": 0, "failed_commands": 0,
            "kernel_timed": 0, "estimated_ns": 0, "outside_ns": 0, "unestimated": 0, "sample": 1,
            "cost_ns": 0, "budget_pct": None, "coverage_every": 1, "queue": None,
            "kernels": defaultdict(lambda: {"count": 0, "total_ns": 0, "shapes": 0, "p99_ns": 0}),
            "transfers": defaultdict(lambda: {"count": 0, "total_ns": 0, "bytes": 0}),
            "host_api": defaultdict(int)}


def _add_window(ph: dict, ev: dict) -> None:
    ph["windows"] += 1
    for c in ev.get("commands") or []:
        api, ns, n = c.get("api"), int(c.get("total_ns") or 0), int(c.get("count") or 0)
        if api == KERNEL_API:
            k = ph["kernels"][c.get("kernel") or "?"]
            k["count"] += n
            k["total_ns"] += ns
            k["shapes"] += 1
            k["p99_ns"] = max(k["p99_ns"], int(c.get("p99_ns") or 0))
            ph["kernels_ns"] += ns
            ph["kernel_count"] += n
            ph["kernel_timed"] += int(c["timed"]) if c.get("timed") is not None else n
        else:
            t = ph["transfers"][api]
            t["count"] += n
            t["total_ns"] += ns
            t["bytes"] += int(c.get("bytes") or 0)
            ph["transfers_ns"] += ns
            ph["transfer_count"] += n
            ph["transfer_bytes"] += int(c.get("bytes") or 0)
    other = ev.get("other") or {}
    ph["other_ns"] += int(other.get("total_ns") or 0)
    ph["other_count"] += int(other.get("count") or 0)
    busy, idle, span = int(ev.get("busy_ns") or 0), int(ev.get("idle_ns") or 0), int(ev.get("span_ns") or 0)
    ph["busy_ns"] += busy
    ph["idle_ns"] += idle
    ph["span_ns"] += span
    first, last = ev.get("host_first_ns"), ev.get("host_last_ns")
    host_span = int(last) - int(first) if first and last and last > first else 0
    ph["host_span_ns"] += host_span
    outside = int(ev.get("outside_ns") or 0)  # estimated busy time before/after the timed span
    ph["host_only_ns"] += max(0, host_span - span - outside)
    for api, ns in (ev.get("host_ns") or {}).items():
        ph["host_api"][api] += int(ns)
        ph["host_api_ns"] += int(ns)
    ph["untimed"] += int(ev.get("untimed") or 0)
    ph["estimated_ns"] += int(ev.get("estimated_ns") or 0)
    ph["outside_ns"] += outside
    ph["unestimated"] += int(ev.get("unestimated") or 0)
    ph["sample"] = max(ph["sample"], int(ev.get("sample") or 1))
    ph["cost_ns"] += int(ev.get("cost_ns") or 0)
    if ev.get("budget_pct") is not None:
        ph["budget_pct"] = float(ev["budget_pct"])
    ph["coverage_every"] = max(ph["coverage_every"], int(ev.get("coverage_every") or 1))
    ph["queue"] = ev.get("queue") or ph["queue"]
    ph["failed_commands"] += int(ev.get("failed_commands") or 0)


def mono_t0_ns(run: RunFolder) -> int | None:
    """The run's t=0 on CLOCK_MONOTONIC (ns), the interposer's clock: run_start's monotonic_t0,
    else from the interposer's start record (its unix and monotonic stamps) and the wall clock."""
    start = run.first("run_start") or {}
    if start.get("monotonic_t0") is not None:
        return int(float(start["monotonic_t0"]) * 1e9)
    cl = run.first("cl_start")
    if cl and cl.get("unix_ns") and cl.get("t_ns") and start.get("ts"):
        unix0 = _dt.datetime.fromisoformat(start["ts"]).timestamp() - float(start.get("t") or 0)
        return int(unix0 * 1e9) - (int(cl["unix_ns"]) - int(cl["t_ns"]))
    return None


_PLACE_RECENT = 256  # iteration ends kept to place windows: a window is written within a few iterations of its own


class _Placer:
    """Places prefill/decode/respond windows on their iteration while the events stream by, in
    bounded memory: the iteration whose event is the first one written after the window's first
    CL call (an iteration's event comes after its respond returned; the one before it, before its
    respond began).  Windows come before or after their iteration's event (a prefill window is
    written once decode begins, a decode window once the next iteration's calls come); those
    waiting for a later iteration are held until it comes, and the last _PLACE_RECENT iteration
    ends are kept for the others.  Each placed iteration's engine times are summed once."""

    def __init__(self, t0: int | None):
        self.t0 = t0
        self.recent: deque = deque(maxlen=_PLACE_RECENT)  # [end_ns, perf sums, counted]
        self.waiting: list[int] = []  # host_first_ns of windows after the last iteration end
        self.placed = self.unplaced = self.iterations = 0
        self.sums = _Sums()

    def iteration(self, e: dict) -> None:
        if self.t0 is None or e.get("t") is None:
            return
        entry = [self.t0 + int(float(e["t"]) * 1e9), e, False]
        self.recent.append(entry)
        if self.waiting:
            still = [first for first in self.waiting if first > entry[0]]
            for _ in range(len(self.waiting) - len(still)):
                self._place(entry)
            self.waiting = still

    def window(self, w: dict) -> None:
        first = w.get("host_first_ns")
        if self.t0 is None or not first or phase_of(w) not in ("prefill", "decode", "respond"):
            return
        first = int(first)
        if not self.recent or first > self.recent[-1][0]:
            self.waiting.append(first)
            return
        ends = [r[0] for r in self.recent]
        k = bisect.bisect_left(ends, first)
        if k == 0 and len(self.recent) == self.recent.maxlen and first < ends[0]:
            self.unplaced += 1  # older than the iterations kept
            return
        self._place(self.recent[k])

    def _place(self, entry: list) -> None:
        self.placed += 1
        if not entry[2]:
            entry[2] = True
            self.iterations += 1
            self.sums.add(entry[1])

    def finish(self) -> None:
        self.unplaced += len(self.waiting)
        self.waiting.clear()


class _Sums:
    """The engine's own phase times and token counts, summed over iteration events."""

    __slots__ = ("prefill_us", "decode_us", "prompt_tokens", "generated_tokens", "count")

    def __init__(self):
        self.prefill_us = self.decode_us = self.prompt_tokens = self.generated_tokens = self.count = 0

    def add(self, e: dict) -> None:
        if e.get("prefill_us") is None:
            return
        self.prefill_us += int(e.get("prefill_us") or 0)
        self.decode_us += int(e.get("decode_us") or 0)
        self.prompt_tokens += int(e.get("prompt_tokens") or 0)
        self.generated_tokens += int(e.get("generated_tokens") or 0)
        self.count += 1

    def phases(self, run: RunFolder) -> dict[str, dict]:
        loads = [e for e in run.of("load") if e.get("ok")]
        n = self.count
        return {
            "load": {"us": sum(int(e.get("load_us") or e.get("duration_s", 0) * 1e6) for e in loads),
                     "count": len(loads)},
            "prefill": {"us": self.prefill_us, "tokens": self.prompt_tokens, "count": n},
            "decode": {"us": self.decode_us, "tokens": self.generated_tokens, "count": n},
            "respond": {"us": self.prefill_us + self.decode_us, "tokens": self.generated_tokens, "count": n},
        }


def measured(run: RunFolder) -> dict[str, dict]:
    """The engine's own phase times and token counts over the whole run (iteration perf, load
    events), streamed."""
    sums = _Sums()
    for e in run.stream({"iteration"}):
        sums.add(e)
    return sums.phases(run)


def _finish(name: str, ph: dict, meas: dict | None) -> dict:
    kernels = sorted(({"kernel": k, **v} for k, v in ph.pop("kernels").items()),
                     key=lambda k: -k["total_ns"])
    transfers = sorted(({"api": k, **v, "gb_s": round(v["bytes"] / v["total_ns"], 3) if v["total_ns"] else None}
                        for k, v in ph.pop("transfers").items()), key=lambda t: -t["total_ns"])
    host_api = dict(sorted(ph.pop("host_api").items(), key=lambda kv: -kv[1])[:8])
    out = {"phase": name, **ph, "top_kernels": kernels[:TOP_KERNELS], "kernel_names": len(kernels),
           "transfers": transfers, "top_host_api": host_api}
    accounted = ph["busy_ns"] + ph["idle_ns"] + ph["host_only_ns"]
    out["accounted_ns"] = accounted
    out["overlap_ns"] = max(0, ph["kernels_ns"] + ph["transfers_ns"] + ph["other_ns"] - ph["busy_ns"])
    out["idle_fraction"] = round(ph["idle_ns"] / ph["span_ns"], 4) if ph["span_ns"] else None
    out["mean_kernel_ns"] = round(ph["kernels_ns"] / ph["kernel_count"]) if ph["kernel_count"] else None
    out["transfer_gb_s"] = round(ph["transfer_bytes"] / ph["transfers_ns"], 3) if ph["transfers_ns"] else None
    # the sampling: kernel launches per timed one, and the profiler's own host time against the
    # phase's wall time (the windows' host spans)
    out["rate"] = round(ph["kernel_count"] / ph["kernel_timed"], 2) if ph["kernel_timed"] else None
    out["cost_fraction"] = round(ph["cost_ns"] / ph["host_span_ns"], 4) if ph["host_span_ns"] else None
    if meas and meas.get("us"):
        m_ns = meas["us"] * 1000
        out["measured_ns"] = m_ns
        out["closure"] = round(accounted / m_ns, 4)
        out["closes"] = abs(accounted / m_ns - 1) <= CLOSURE_TOLERANCE
        tokens = meas.get("tokens")
        if tokens:
            out["tokens"] = tokens
            out["ns_per_token"] = round(m_ns / tokens)
            out["kernels_per_token"] = round(ph["kernel_count"] / tokens, 2)
            out["tokens_per_s"] = round(tokens / (m_ns / 1e9), 2)
    return out


def profile_run(run: RunFolder | str) -> dict:
    """Per phase: kernels, transfers, idle, host-only, host API time, closure against the
    engine's measured phase time.  {"phases": {name: ...}, "windows": n, ...}.  One pass over
    the iteration and cl_profile events, in memory bounded by the number of kernel names."""
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    phases: dict[str, dict] = {}
    placer = _Placer(mono_t0_ns(run))
    every = _Sums()
    windows = 0
    for ev in run.stream({"iteration", "cl_profile"}):
        if ev.get("event") == "iteration":
            every.add(ev)
            placer.iteration(ev)
            continue
        windows += 1
        _add_window(phases.setdefault(phase_of(ev), _new_phase()), ev)
        placer.window(ev)
    placer.finish()
    # the engine's times of the iterations the profile saw (all of them when windows cannot be
    # placed: a run folder without monotonic_t0 and interposer start stamps)
    meas = (placer.sums if placer.placed else every).phases(run)
    out = {"run_id": run.run_id, "run_dir": str(run.path), "backend": run.backend_actual or run.backend_requested,
           "windows": windows, "measured": meas, "iterations": run.iterations_seen,
           "iterations_profiled": placer.iterations if placer.placed else None,
           "windows_unplaced": placer.unplaced if placer.placed else None,
           "phases": {n: _finish(n, phases[n], meas.get(n)) for n in PROFILE_PHASE_ORDER if n in phases}}
    if not windows:
        out["note"] = "no cl_profile events: run with --cl-profile on OpenCL"
    elif out["backend"] and out["backend"] != "opencl":
        out["note"] = (f"the engine ran on {out['backend']} (OpenCL fell back): these windows hold only "
                       "the CL calls made before the fallback, not a GPU profile")
    return out


def budget_words(ph: dict) -> str:
    """How the phase's rate was set: the cost budget (and whether the phase kept to it), or fixed."""
    if not ph.get("kernel_count"):  # nothing the budget samples: reading events, writing the records
        return "no kernel launches to sample: reading events and writing the window records"
    if ph.get("budget_pct"):
        return (f"budget {ph['budget_pct']:g} %: "
                + ("within" if (ph.get("cost_fraction") or 0) <= ph["budget_pct"] / 100 else "OVER"))
    return f"fixed rate 1 in {ph['sample']}, no budget"


def _ms(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3f} ms"


def explain(gpu: dict, cpu: RunFolder | str | None) -> list[str]:
    """Sentences: per phase, the GPU's time per token against the CPU run's, and which part of
    the GPU's time makes it slower (kernels, transfers, idle gaps, host-only)."""
    if cpu is None:
        return []
    cpu = cpu if isinstance(cpu, RunFolder) else RunFolder(cpu)
    cmeas = measured(cpu)
    lines = []
    for name in ("prefill", "decode"):
        ph = gpu["phases"].get(name)
        c = cmeas.get(name) or {}
        if not ph or not ph.get("tokens") or not c.get("tokens") or not c.get("us"):
            continue
        g_tok = ph["ns_per_token"]
        c_tok = c["us"] * 1000 / c["tokens"]
        n = ph["tokens"]
        parts = {"kernels": ph["kernels_ns"] / n, "transfers": (ph["transfers_ns"] + ph["other_ns"]) / n,
                 "device idle": ph["idle_ns"] / n, "host-only": ph["host_only_ns"] / n}
        head = (f"{name}: GPU {_ms(g_tok)}/token vs CPU {_ms(c_tok)}/token "
                f"({c_tok / g_tok:.3g}x the CPU's speed); GPU token = " +
                ", ".join(f"{k} {_ms(v)}" for k, v in parts.items()))
        if g_tok <= c_tok:
            lines.append(head + f" -> the GPU is faster in {name}.")
            continue
        worst = max(parts, key=parts.get)
        without = g_tok - parts[worst]
        why = (f"the largest part is {worst} ({_ms(parts[worst])}/token, {parts[worst] / g_tok:.0%} of the GPU token); "
               + (f"without it the GPU token would take {_ms(without)}, "
                  + ("at or under" if without <= c_tok else "still over") + f" the CPU's {_ms(c_tok)}"))
        if worst == "device idle":
            why += (f"; the device waits for the host between {ph['kernels_per_token']} kernels/token "
                    f"of {_ms(ph['mean_kernel_ns'])} mean (idle fraction {ph['idle_fraction']:.0%}): launch-bound")
            host = ", ".join(f"{k} {v / 1e6:.1f} ms" for k, v in list(ph["top_host_api"].items())[:3])
            if host:
                why += f"; host time inside CL calls in {name}: {host}"
            if ph["top_host_api"].get("clBuildProgram"):
                why += " (clBuildProgram here: kernels compiled on first use, a cold kernel cache)"
        if worst == "kernels" and ph.get("kernels_per_token"):
            top = ", ".join(f"{k['kernel']} {k['total_ns'] / ph['kernels_ns']:.0%}" for k in ph["top_kernels"][:3]
                            if ph["kernels_ns"])
            why += (f"; {ph['kernels_per_token']} kernels/token x {_ms(ph['mean_kernel_ns'])} mean"
                    + (f" (top: {top})" if top else ""))
            if parts["kernels"] >= c_tok:
                why += " - the kernels alone take longer than the CPU's whole token"
        if worst != "kernels" and parts["kernels"] >= c_tok:
            why += (f"; the kernels alone ({_ms(parts['kernels'])}/token: {ph['kernels_per_token']} kernels x "
                    f"{_ms(ph['mean_kernel_ns'])}) also take longer than the CPU's whole token")
        lines.append(head + " -> " + why + ".")
    return lines


def render(result: dict, explanation: list[str] = ()) -> str:
    seen = (f", {result['iterations_profiled']} of {result['iterations']} iterations profiled"
            if result.get("iterations_profiled") is not None else "")
    out = [f"profile of {result['run_id']} ({result['backend']}): {result['windows']} profile windows{seen}"]
    if result.get("note"):
        out.append(result["note"])
    for name, ph in result["phases"].items():
        meas = f"measured {_ms(ph.get('measured_ns'))}" if ph.get("measured_ns") else "not measured by the engine"
        out.append("")
        out.append(f"== {name}: {ph['windows']} windows, {meas}")
        out.append(f"  kernels    {_ms(ph['kernels_ns'])}  ({ph['kernel_count']} launches, {ph['kernel_names']} kernels, "
                   f"mean {_ms(ph['mean_kernel_ns'])})")
        gbs = f", {ph['transfer_gb_s']} GB/s" if ph["transfer_gb_s"] is not None else ""
        out.append(f"  transfers  {_ms(ph['transfers_ns'])}  ({ph['transfer_count']} commands, "
                   f"{ph['transfer_bytes'] / 1e6:.2f} MB{gbs})")
        if ph["other_count"]:
            out.append(f"  other cmds {_ms(ph['other_ns'])}  ({ph['other_count']} commands beyond the top 48)")
        frac = f" ({ph['idle_fraction']:.0%} of the device span)" if ph["idle_fraction"] is not None else ""
        out.append(f"  GPU idle   {_ms(ph['idle_ns'])}{frac}")
        out.append(f"  host-only  {_ms(ph['host_only_ns'])}  (host span beyond the device span)")
        out.append(f"  host API   {_ms(ph['host_api_ns'])}  (inside CL calls; overlaps the above) "
                   + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in list(ph["top_host_api"].items())[:4]) + " ms")
        if ph.get("measured_ns"):
            ok = "within" if ph["closes"] else "OUTSIDE"
            out.append(f"  closure    kernels + transfers + other + idle + host-only = {_ms(ph['accounted_ns'])} "
                       f"= {ph['closure']:.1%} of measured ({ok} ±{CLOSURE_TOLERANCE:.0%})")
        if ph.get("tokens"):
            out.append(f"  per token  {ph['kernels_per_token']} kernels, {_ms(ph['ns_per_token'])} "
                       f"({ph['tokens_per_s']} tok/s over {ph['tokens']} tokens)")
        if ph["kernel_timed"] < ph["kernel_count"]:
            unknown = f", {ph['unestimated']} launches of kernels never timed (not counted)" if ph["unestimated"] else ""
            out.append(f"  sampling   {ph['kernel_timed']} of {ph['kernel_count']} launches timed (1 in {ph['rate']:g}); "
                       f"the others' {_ms(ph['estimated_ns'])} is their kernel's mean{unknown}")
            if ph["coverage_every"] > 1:
                out.append(f"  coverage   each kernel's first launch timed in 1 window in up to {ph['coverage_every']} "
                           f"(the windows are too short to time them all within the budget)")
        if ph["cost_fraction"] is not None and (ph["cost_ns"] or ph["budget_pct"] is not None):
            where = {"twin": "; timed commands on twin queues", "engine": "; the engine's queues profile"}
            out.append(f"  profiler   {_ms(ph['cost_ns'])} of its own host time = {ph['cost_fraction']:.1%} of the "
                       f"phase's wall time ({budget_words(ph)}{where.get(ph['queue'], '')})")
        if ph["untimed"] or ph["failed_commands"]:
            out.append(f"  untimed {ph['untimed']}, failed {ph['failed_commands']} commands")
        for k in ph["top_kernels"][:5]:
            share = k["total_ns"] / ph["kernels_ns"] if ph["kernels_ns"] else 0
            out.append(f"    {k['kernel'][:40]:40s} {k['count']:7d} x {k['total_ns'] / max(k['count'], 1) / 1e3:8.1f} us"
                       f" = {_ms(k['total_ns'])} ({share:.0%})")
    if explanation:
        out.append("")
        out.append("GPU vs CPU (same seeded workload):")
        out += [f"  {line}" for line in explanation]
    return "\n".join(out)


def same_workload(a: RunFolder, b: RunFolder) -> str | None:
    """None when the two runs ran the same seeded workload (seed, and conversation/turn/
    max_new_tokens of every iteration both have); else what differs."""
    sa, sb = a.seed, b.seed
    if sa != sb:
        return f"seeds differ ({sa} vs {sb})"
    keys = ("conversation", "turn", "max_new_tokens")
    ia = {e.get("i"): {k: e.get(k) for k in keys} for e in a.stream({"iteration"})}
    ib = {e.get("i"): {k: e.get(k) for k in keys} for e in b.stream({"iteration"})}
    common = sorted(set(ia) & set(ib), key=lambda i: (i is None, i))
    if not common:
        return "no iteration in common"
    for i in common:
        ka = tuple(ia[i].get(k) for k in ("conversation", "turn", "max_new_tokens"))
        kb = tuple(ib[i].get(k) for k in ("conversation", "turn", "max_new_tokens"))
        if ka != kb:
            return f"iteration {i} differs (conversation, turn, max_new_tokens {ka} vs {kb})"
    return None

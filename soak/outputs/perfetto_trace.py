"""A run folder as a Perfetto trace (ui.perfetto.dev): `soak trace RUN -o run.pftrace`.

Written with the `perfetto` package's trace builder (TrackEvent protobuf); the package's
trace processor needs a binary it would download, so soak never starts it (tests load the file
with a trace_processor_shell found offline, and always parse it back with the package's own
proto classes).

Tracks (timestamps: ns since the run started, on the host's CLOCK_MONOTONIC):
  soak: iterations        load and iteration slices (engine prefill/decode nested inside)
  OpenCL: phases          the interposer's profile windows (load/prefill/decode), --cl-profile
  GPU queue: kernels      per window, the top kernels as consecutive slices of their summed
                          device time (aggregates: the interposer keeps no per-command stamps)
  GPU queue: transfers    per window, reads/writes/maps/copies the same way
  events                  CL call errors, faults, recoveries, worker restarts (instants)
  counters                RSS, GPU live bytes (interposer), decode tok/s
"""

from __future__ import annotations

from pathlib import Path

from soak.analysis.profile import KERNEL_API, mono_t0_ns, phase_of
from soak.analysis.loaded_run import RunFolder
from soak.errors import BadInput

TOP_PER_WINDOW = 6
_SEQ = 0x50AC

TRACKS = {  # name -> uuid
    "soak: iterations": 1, "OpenCL: phases": 2, "GPU queue: kernels": 3, "GPU queue: transfers": 4,
    "events": 5, "RSS (bytes)": 10, "GPU live bytes (interposer)": 11, "decode tok/s": 12,
}
COUNTERS = {"RSS (bytes)", "GPU live bytes (interposer)", "decode tok/s"}


class _Builder:
    def __init__(self):
        from perfetto.trace_builder.proto_builder import TraceProtoBuilder

        self.b = TraceProtoBuilder()
        self.first = True
        self.slices = 0
        for name, uuid in TRACKS.items():
            p = self._packet()
            p.track_descriptor.uuid = uuid
            p.track_descriptor.name = name
            if name in COUNTERS:
                p.track_descriptor.counter.SetInParent()

    def _packet(self):
        p = self.b.add_packet()
        p.trusted_packet_sequence_id = _SEQ
        if self.first:
            p.sequence_flags = 1  # SEQ_INCREMENTAL_STATE_CLEARED
            self.first = False
        return p

    def _event(self, ts: int, track: str, etype: int, name: str | None = None, args: dict | None = None):
        p = self._packet()
        p.timestamp = max(0, int(ts))
        e = p.track_event
        e.type = etype
        e.track_uuid = TRACKS[track]
        if name is not None:
            e.name = name
        for k, v in (args or {}).items():
            if v is None:
                continue
            d = e.debug_annotations.add()
            d.name = k
            if isinstance(v, bool) or isinstance(v, str):
                d.string_value = str(v)
            elif isinstance(v, int):
                d.int_value = v
            elif isinstance(v, float):
                d.double_value = v
            else:
                d.string_value = str(v)
        return e

    def slice(self, track: str, begin: int, end: int, name: str, args: dict | None = None) -> None:
        self._event(begin, track, 1, name, args)
        self._event(max(begin, end), track, 2)
        self.slices += 1

    def instant(self, track: str, ts: int, name: str, args: dict | None = None) -> None:
        self._event(ts, track, 3, name, args)

    def counter(self, track: str, ts: int, value: float) -> None:
        self._event(ts, track, 4).double_counter_value = float(value)

    def serialize(self) -> bytes:
        return self.b.serialize()


def _ns(seconds) -> int:
    return int(float(seconds) * 1e9)


def _aggregate_slices(tb: _Builder, track: str, begin: int, end: int, items: list[dict], label) -> None:
    """Items (commands of one window) as consecutive slices from `begin`, each as long as its
    summed device time; squeezed into [begin, end] when they would not fit (args say so)."""
    items = sorted(items, key=lambda c: -int(c.get("total_ns") or 0))[:TOP_PER_WINDOW]
    total = sum(int(c.get("total_ns") or 0) for c in items)
    room = max(0, end - begin)
    scale = min(1.0, room / total) if total else 1.0
    t = begin
    for c in items:
        d = int(int(c.get("total_ns") or 0) * scale)
        tb.slice(track, t, t + d, label(c), {
            "count": int(c.get("count") or 0), "device_ns": int(c.get("total_ns") or 0),
            "p50_ns": c.get("p50_ns"), "p99_ns": c.get("p99_ns"), "bytes": c.get("bytes"),
            "gws": str(c.get("gws")) if c.get("gws") else None, "aggregate": True,
            "time_scale": round(scale, 4) if scale < 1 else None})
        t += d


def build_trace(run_dir: str | Path) -> tuple[bytes, dict]:
    """The trace's bytes and what went in (counts per kind)."""
    run = RunFolder(run_dir)
    t0 = mono_t0_ns(run)
    tb = _Builder()
    n = {"iterations": 0, "loads": 0, "windows": 0, "kernel_slices": 0, "transfer_slices": 0,
         "instants": 0, "counters": 0, "windows_unplaced": 0}
    for e in run.stream():
        kind = e.get("event")
        t = _ns(e.get("t") or 0)
        if kind == "load":
            dur = _ns(e.get("duration_s") or 0)
            tb.slice("soak: iterations", t - dur, t, "load" + ("" if e.get("ok") else " (failed)"),
                     {"cache": e.get("cache"), "backend": e.get("backend_actual"), "load_us": e.get("load_us")})
            n["loads"] += 1
        elif kind == "iteration":
            dur = _ns(e.get("wall_s") or 0)
            begin = t - dur
            tb._event(begin, "soak: iterations", 1, f"iteration {e.get('i')}", {
                "conversation": e.get("conversation"), "turn": e.get("turn"), "status": e.get("status_name"),
                "prompt_tokens": e.get("prompt_tokens"), "generated_tokens": e.get("generated_tokens"),
                "decode_tps": e.get("decode_tps"), "prefill_tps": e.get("prefill_tps")})
            pre, dec = int(e.get("prefill_us") or 0) * 1000, int(e.get("decode_us") or 0) * 1000
            if pre and pre + dec <= dur:  # the engine's own phase times, inside the iteration
                tb.slice("soak: iterations", begin, begin + pre, "prefill (engine)")
                if dec:
                    tb.slice("soak: iterations", begin + pre, begin + pre + dec, "decode (engine)")
            tb._event(t, "soak: iterations", 2)
            n["iterations"] += 1
            if e.get("decode_tps"):
                tb.counter("decode tok/s", t, e["decode_tps"])
                n["counters"] += 1
        elif kind == "memory":
            if e.get("rss") is not None:
                tb.counter("RSS (bytes)", t, e["rss"])
                n["counters"] += 1
            if e.get("gpu_live_bytes") is not None:
                tb.counter("GPU live bytes (interposer)", t, e["gpu_live_bytes"])
                n["counters"] += 1
        elif kind == "cl_call_error":
            tb.instant("events", t, f"CL error {e.get('api')} {e.get('code_name') or e.get('code')}"
                       f" x{e.get('count', 1)}", {"injected": e.get("injected"), "key": e.get("key"),
                                                  "iteration": e.get("iteration")})
            n["instants"] += 1
        elif kind in ("fault", "recovery", "worker_start", "cl_build_failure", "worker_exit"):
            label = e.get("kind") or e.get("action") or e.get("rung") or ""
            tb.instant("events", t, f"{kind} {label}".strip(),
                       {k: v for k, v in e.items() if k in ("iteration", "kind", "phase", "ok", "action",
                                                            "rung", "reason", "message", "generation")})
            n["instants"] += 1
        elif kind == "cl_profile":
            first, last = e.get("host_first_ns"), e.get("host_last_ns")
            if t0 is None or not first or not last:
                n["windows_unplaced"] += 1
                continue
            begin, end = int(first) - t0, int(last) - t0
            phase = phase_of(e)
            tb.slice("OpenCL: phases", begin, end, phase, {
                "epoch": e.get("epoch"), "busy_ns": e.get("busy_ns"), "idle_ns": e.get("idle_ns"),
                "span_ns": e.get("span_ns"), "untimed": e.get("untimed"), "pid": e.get("pid")})
            n["windows"] += 1
            cmds = e.get("commands") or []
            kernels = [c for c in cmds if c.get("api") == KERNEL_API]
            transfers = [c for c in cmds if c.get("api") != KERNEL_API]
            _aggregate_slices(tb, "GPU queue: kernels", begin, end, kernels,
                              lambda c: f"{c.get('kernel') or '?'} x{c.get('count')}")
            _aggregate_slices(tb, "GPU queue: transfers", begin, end, transfers,
                              lambda c: f"{c.get('api', '').removeprefix('clEnqueue')} x{c.get('count')}")
            n["kernel_slices"] += min(len(kernels), TOP_PER_WINDOW)
            n["transfer_slices"] += min(len(transfers), TOP_PER_WINDOW)
    return tb.serialize(), n


def write_trace(run_dir: str | Path, output: str | Path) -> dict:
    try:
        import perfetto.trace_builder.proto_builder  # noqa: F401
    except ImportError:
        raise BadInput("soak trace needs the `perfetto` Python package",
                       "pip install 'soak[trace]' (or pip install perfetto)") from None
    data, counts = build_trace(run_dir)
    Path(output).write_bytes(data)
    return {"path": str(output), "bytes": len(data), **counts}

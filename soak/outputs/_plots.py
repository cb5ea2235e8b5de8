"""Plots for the HTML report (matplotlib, rendered to inline SVG).

One figure: RSS, GPU live bytes, decode tok/s and latency over iterations,
stacked on one shared iteration axis; faults are red vertical lines across
every panel (so a tok/s dip lines up with the CL error under it), recoveries
green ticks.  Several runs are overlaid in distinct colours.
"""

from __future__ import annotations

import io
import re

from soak.analysis.loaded_run import RunFolder
from soak.errors import BadInput
from soak.fault_kinds import fault_detail
from soak.outputs._findings import fault_events

MIB = float(1 << 20)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise BadInput("`soak report` needs matplotlib, which is not installed",
                       hint="pip install 'soak[report]'  (or: pip install matplotlib)") from None
    return Figure


def _series(run: RunFolder):
    mem = [(e.get("iteration"), e) for e in run.memory_events if e.get("source", "iteration") == "iteration"]
    mem = [(i, e) for i, e in mem if isinstance(i, int)]
    rss = [(i, e["rss"] / MIB) for i, e in mem if isinstance(e.get("rss"), (int, float))]
    gpu = [(i, e["gpu_live_bytes"] / MIB) for i, e in mem if isinstance(e.get("gpu_live_bytes"), (int, float))]
    its = [e for e in run.iteration_series if isinstance(e.get("i"), int)]
    tps = [(e["i"], e["decode_tps"]) for e in its
           if e.get("ok", True) and isinstance(e.get("decode_tps"), (int, float)) and e["decode_tps"] > 0]
    lat = [(e["i"], e["wall_s"]) for e in its if isinstance(e.get("wall_s"), (int, float))]
    faults: dict[int, list[str]] = {}  # iteration -> "kind: detail" of each fault there
    for e in fault_events(run):
        if isinstance(e.get("iteration"), int):
            detail = fault_detail(e["kind"], e)
            faults.setdefault(e["iteration"], []).append(f"{e['kind']}: {detail}" if detail else e["kind"])
    recs = sorted({e["iteration"] for e in run.recoveries if isinstance(e.get("iteration"), int)})
    clock = [(e["i"], e["t"]) for e in its if isinstance(e.get("t"), (int, float))]
    return {"rss": rss, "gpu": gpu, "tps": tps, "lat": lat, "faults": faults, "recoveries": recs, "clock": clock}


SMOOTH_ABOVE = 300  # points in a series: above this, the raw series faint and a rolling median over it
LABEL_FAULTS_UP_TO = 25  # fault markers labelled with their kind (hover text always)


def _smooth(ys: list[float]) -> list[float]:
    """Rolling median over about 1% of the series (an odd window of at least 5)."""
    import statistics

    half = max(2, len(ys) // 200)
    return [statistics.median(ys[max(0, k - half):k + half + 1]) for k in range(len(ys))]


def _clock_axis(ax, clock: list[tuple[int, float]]) -> None:
    """Elapsed time (h:mm or m:ss) along the top of the first panel, next to the iterations."""
    if len(clock) < 2:
        return
    import numpy as np

    its = np.array([c[0] for c in clock], dtype=float)
    ts = np.array([c[1] for c in clock], dtype=float)
    order = np.argsort(its)
    its, ts = its[order], np.maximum.accumulate(ts[order])
    sec = ax.secondary_xaxis("top", functions=(lambda x: np.interp(x, its, ts), lambda t: np.interp(t, ts, its)))
    span = ts[-1] - ts[0]

    def fmt(v, _pos):
        v = max(0, int(v))
        return f"{v // 3600}:{v % 3600 // 60:02d}h" if span >= 3600 else f"{v // 60}:{v % 60:02d}"

    from matplotlib.ticker import FuncFormatter

    sec.xaxis.set_major_formatter(FuncFormatter(fmt))
    sec.set_xlabel("elapsed (clock time since the start)", fontsize=8)
    sec.tick_params(labelsize=8)


def timeline_svg(runs: list[RunFolder]) -> str:
    Figure = _figure_class()
    fig = Figure(figsize=(11, 9.5), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    panels = (("rss", "host RSS (MiB)"), ("gpu", "GPU live bytes (MiB)"),
              ("tps", "decode tok/s"), ("lat", "latency per call (s)"))
    plotted = {key: False for key, _ in panels}
    hover: dict[str, str] = {}  # SVG group id -> its <title> (hover text)
    for k, run in enumerate(runs):
        color = COLORS[k % len(COLORS)]
        s = _series(run)
        label = run.run_id
        for ax, (key, title) in zip(axes, panels):
            pts = s[key]
            if pts:
                plotted[key] = True
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                if len(pts) > SMOOTH_ABOVE:  # dense: raw faint, rolling median on top
                    ax.plot(xs, ys, color=color, lw=0.5, alpha=0.3)
                    ax.plot(xs, _smooth(ys), color=color, lw=1.3, label=f"{label} (rolling median)")
                else:
                    ax.plot(xs, ys, color=color, lw=1.0, marker=".", ms=3, label=label)
            for n, (it, what) in enumerate(sorted(s["faults"].items())):
                line = ax.axvline(it, color="#d62728", alpha=0.7 if len(runs) == 1 else 0.5, lw=1.0,
                                  ls="solid" if k == 0 else "dashed",
                                  label="fault" if (key == "rss" and k == 0 and n == 0) else None)
                line.set_gid(f"soakfault-{k}-{key}-{n}")
                hover[line.get_gid()] = f"{label}: iteration {it}: " + "; ".join(what)
                if key == "rss" and len(s["faults"]) <= LABEL_FAULTS_UP_TO:
                    kinds = sorted({w.split(":")[0] for w in what})
                    ax.annotate(f"{it} {'/'.join(kinds)}", (it, 1), xycoords=("data", "axes fraction"),
                                xytext=(2, -2), textcoords="offset points", rotation=90, va="top",
                                fontsize=6.5, color="#b00020")
            if s["recoveries"]:
                ax.plot(s["recoveries"], [0] * len(s["recoveries"]), ls="none", marker="^", color="#2ca02c", ms=5,
                        transform=ax.get_xaxis_transform(), clip_on=False)
            ax.set_ylabel(title, fontsize=9)
            ax.grid(True, alpha=0.3)
    for ax, (key, _title) in zip(axes, panels):
        if not plotted[key]:
            ax.text(0.5, 0.5, "not recorded in this run" if key != "gpu" else
                    "not recorded (run without the OpenCL interposer)",
                    ha="center", va="center", transform=ax.transAxes, color="#777")
            ax.set_yticks([])
    axes[-1].set_xlabel("iteration")
    _clock_axis(axes[0], _series(runs[0])["clock"] if runs else [])
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=8, loc="upper left")
    fig.suptitle("Memory and performance over the run (red lines: faults, hover for what; green ticks: "
                 "recoveries)", fontsize=10)
    return _with_titles(_svg(fig), hover)


def _with_titles(svg: str, hover: dict[str, str]) -> str:
    """A <title> (the browser's hover text) as the first child of each fault marker's group."""
    from xml.sax.saxutils import escape

    def add(m):
        text = hover.get(m.group(1))
        return m.group(0) + (f"<title>{escape(text)}</title>" if text else "")

    return re.sub(r'<g id="(soakfault-[^"]+)"[^>]*>', add, svg)


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    text = re.sub(r"^<\?xml[^>]*>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text, flags=re.S)
    return text


def oracle_svg(verdict: dict, run_id: str) -> str:
    """The oracle's per-turn divergence: each checked turn's mean KL per step against the reference
    (log scale), the wrong and non-finite turns marked, the per-step KL threshold dashed."""
    Figure = _figure_class()
    fig = Figure(figsize=(11, 2.8), layout="constrained")
    ax = fig.subplots(1, 1)
    floor = 1e-18   # a turn that matched exactly (KL 0) sits on the floor of the log axis
    pts = [(i, max(v, floor)) for i, v in verdict.get("series") or []]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=COLORS[0], lw=0.8, marker=".", ms=3,
                label=f"{run_id}: mean KL per step of each checked turn")
    wrong = [t for t in verdict.get("wrong_turns") or [] if isinstance(t.get("i"), int)]
    bad = [(t["i"], max(t["kl_mean"], floor)) for t in wrong
           if not t.get("nonfinite_steps") and isinstance(t.get("kl_mean"), (int, float))]
    if bad:
        ax.plot([p[0] for p in bad], [p[1] for p in bad], ls="none", marker="x", color="#d62728", ms=6,
                label="wrong_output")
    nonfinite = [t["i"] for t in wrong if t.get("nonfinite_steps")]
    if nonfinite:
        ax.plot(nonfinite, [1] * len(nonfinite), ls="none", marker="v", color="#b00020", ms=6,
                transform=ax.get_xaxis_transform(), clip_on=False, label="NaN/inf logits")
    limit = (verdict.get("thresholds") or {}).get("kl_max")
    if isinstance(limit, (int, float)) and limit > 0:
        ax.axhline(limit, color="#d62728", ls="dashed", lw=0.8, label=f"per-step KL threshold {limit:g}")
    ax.set_yscale("log")
    ax.set_ylabel("KL (nats)", fontsize=9)
    ax.set_xlabel("iteration")
    ax.grid(True, alpha=0.3)
    if not pts and not nonfinite:
        ax.text(0.5, 0.5, "no checked turn with a measured step", ha="center", va="center",
                transform=ax.transAxes, color="#777")
    ax.legend(fontsize=7, loc="upper left")
    return _svg(fig)

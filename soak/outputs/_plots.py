"""Plots for the HTML report (matplotlib, rendered to inline SVG).

One figure: RSS, GPU live bytes, decode tok/s and latency over iterations,
stacked on one shared iteration axis; faults are red vertical lines across
every panel (so a tok/s dip lines up with the CL error under it), recoveries
green ticks.  Several runs are overlaid in distinct colours.
"""

from __future__ import annotations

import io
import re

from soak.analysis.runfolder import RunFolder
from soak.errors import BadInput

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
    faults = sorted({e["iteration"] for e in run.faults if isinstance(e.get("iteration"), int)})
    recs = sorted({e["iteration"] for e in run.recoveries if isinstance(e.get("iteration"), int)})
    return {"rss": rss, "gpu": gpu, "tps": tps, "lat": lat, "faults": faults, "recoveries": recs}


def timeline_svg(runs: list[RunFolder]) -> str:
    Figure = _figure_class()
    fig = Figure(figsize=(11, 9.5), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    panels = (("rss", "host RSS (MiB)"), ("gpu", "GPU live bytes (MiB)"),
              ("tps", "decode tok/s"), ("lat", "latency per call (s)"))
    plotted = {key: False for key, _ in panels}
    for k, run in enumerate(runs):
        color = COLORS[k % len(COLORS)]
        s = _series(run)
        label = run.run_id
        for ax, (key, title) in zip(axes, panels):
            pts = s[key]
            if pts:
                plotted[key] = True
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=1.0,
                        marker="." if len(pts) < 200 else None, ms=3, label=label)
            if s["faults"]:
                ax.vlines(s["faults"], 0, 1, transform=ax.get_xaxis_transform(), colors="#d62728",
                          alpha=0.7 if len(runs) == 1 else 0.5, lw=1.0, linestyles="solid" if k == 0 else "dashed",
                          label="fault" if (key == "rss" and k == 0) else None)
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
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=8, loc="upper left")
    fig.suptitle("Memory and performance over the run (red lines: faults; green ticks: recoveries)", fontsize=10)
    return _svg(fig)


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    text = re.sub(r"^<\?xml[^>]*>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text, flags=re.S)
    return text

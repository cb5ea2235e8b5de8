"""What a person sees: a live progress line and a final summary table."""

from __future__ import annotations

import sys
import time


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}GiB"


def human_duration(s: float) -> str:
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class Progress:
    """One updating line on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, stream=None, every_s: float = 5.0, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = every_s
        self.quiet = quiet
        self._last = 0.0

    def update(self, *, iteration: int, total: int | None, elapsed: float, duration: float | None,
               faults: int, recovered: int, rss: int | None, decode_tps: float | None, force=False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not force and not self.tty and now - self._last < self.every_s:
            return
        if not force and self.tty and now - self._last < 0.1:
            return
        self._last = now
        goal = f"/{total}" if total else ""
        limit = f"/{human_duration(duration)}" if duration else ""
        tps = f"{decode_tps:.0f}" if decode_tps else "-"
        line = (f"iter {iteration}{goal}  {human_duration(elapsed)}{limit}  faults {faults}"
                f"  recovered {recovered}  rss {human_bytes(rss)}  decode {tps} tok/s")
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def table(rows: list[tuple[str, str]], title: str | None = None) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    out = [title, "-" * len(title)] if title else []
    out += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(out)


def summary_table(summary: dict) -> str:
    rows = [
        ("run", summary["run_id"]),
        ("folder", summary["run_dir"]),
        ("ended by", summary["end_reason"]),
        ("iterations", str(summary["iterations"])),
        ("elapsed", human_duration(summary["elapsed_s"])),
        ("engine", f"{summary.get('engine_name') or '-'}"),
        ("backend", f"{summary['backend_requested']} -> {summary.get('backend_actual') or '?'}"),
        ("worker restarts", str(summary["worker_restarts"])),
        ("decode tok/s", f"{summary['decode_tps_mean']:.1f}" if summary.get("decode_tps_mean") else "-"),
        ("prefill tok/s", f"{summary['prefill_tps_mean']:.1f}" if summary.get("prefill_tps_mean") else "-"),
        ("rss first/last/max", " / ".join(human_bytes(summary["rss"].get(k)) for k in ("first", "last", "max"))),
    ]
    text = table(rows, "soak run summary")
    kinds = summary.get("faults_by_kind") or {}
    if kinds:
        text += "\n\n" + table([(k, str(v)) for k, v in sorted(kinds.items())], "faults by kind")
    rec = summary.get("recovery") or {}
    if rec.get("attempts"):
        rows = [(f"recovered by {k}", str(v)) for k, v in sorted(rec.get("by_step", {}).items())]
        rows.append(("unrecovered", str(rec.get("unrecovered", 0))))
        text += "\n\n" + table(rows, f"recovery ({rec['attempts']} attempts)")
    analysis = summary.get("analysis") or {}
    verdicts = analysis.get("verdicts") or {}
    if verdicts.get("lines"):
        text += "\n\n" + "\n".join(["verdicts", "--------", *verdicts["lines"]])
    elif verdicts.get("error"):
        text += f"\n\nverdicts failed: {verdicts['error']}"
    cls = analysis.get("classification") or {}
    if "findings" in cls:
        text += (f"\n\nclassified: {cls['findings']} distinct findings ({cls.get('known', '?')} known faults)"
                 f"  -> soak classify {summary['run_dir']}")
    elif cls.get("error"):
        text += f"\n\nclassification failed: {cls['error']}"
    if summary.get("faults"):
        text += (f"\nnext: soak report {summary['run_dir']}   soak gate {summary['run_dir']}"
                 f"   soak bundle {summary['run_dir']}")
    if summary.get("backend_requested") == "opencl" and summary.get("backend_actual") == "cpu":
        text += "\n\nWARNING: OpenCL was requested but MNN ran on the CPU (silent fallback). This is NOT an OpenCL run."
    return text

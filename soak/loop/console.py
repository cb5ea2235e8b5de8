"""What a person sees: a live progress line and a final summary table."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
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


def display_mode(stream, quiet: bool) -> str:
    """quiet (nothing but errors), live (rich, on a terminal) or plain (a line now and then)."""
    if quiet:
        return "quiet"
    tty = hasattr(stream, "isatty") and stream.isatty()
    if not tty or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return "plain"
    return "live"


class Progress:
    """What a person sees while a run goes: the run folder and seed at the start, then on a
    terminal one width-aware live line (rich: bar and percentage when the run is bounded,
    ETA, rate) with each new fault printed above it; elsewhere, or under NO_COLOR, a plain
    line every few seconds and one line per fault.  Quiet: nothing."""

    def __init__(self, stream=None, quiet: bool = False, total: int | None = None,
                 duration: float | None = None, every_s: float = 5.0):
        self.stream = stream or sys.stderr
        self.mode = display_mode(self.stream, quiet)
        self.quiet = self.mode == "quiet"
        self.total = total
        self.duration = duration
        self.every_s = every_s
        self._last = 0.0
        self._lock = threading.Lock()
        self._state: dict | None = None
        self._live = None
        self._console = None

    # -- the start -----------------------------------------------------------
    def start(self, *, run_dir, seed: int, run_id: str) -> None:
        if self.quiet:
            return
        head = [f"soak run {run_id}  seed {seed}", f"  folder {_short_path(run_dir)}"]
        if self.mode == "plain":
            self._write("\n".join(head) + "\n")
            return
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=self.stream, highlight=False, soft_wrap=False, emoji=False)
        width = self._console.width
        for line in head:  # long paths broken by us, not wrapped by the terminal
            for k in range(0, len(line), width):
                self._print_above(line[k:k + width])
        self._live = Live(_Line(self), console=self._console, refresh_per_second=4, transient=False,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    # -- while it runs ---------------------------------------------------------
    def update(self, *, iteration: int, total: int | None, elapsed: float, duration: float | None,
               faults: int, recovered: int, rss: int | None, decode_tps: float | None, force=False) -> None:
        if self.quiet:
            return
        self.total, self.duration = total, duration
        self._state = {"i": iteration, "elapsed": elapsed, "at": time.monotonic(), "faults": faults,
                       "recovered": recovered, "rss": rss, "tps": decode_tps}
        if self.mode == "live":
            return  # rich redraws on its own timer
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        self._write("  ".join(self.fields(self._state)) + "\n")

    def fault(self, *, iteration: int | None, kind: str, detail: str = "") -> None:
        """A new fault, printed as it happens (above the live line)."""
        if self.quiet:
            return
        where = f"iter {iteration}" if iteration is not None else "start"
        line = f"fault  {where}  {kind}" + (f"  {detail}" if detail else "")
        if self.mode == "live" and self._console is not None:
            self._print_above(line)
        else:
            self._write(line + "\n")

    def done(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    # -- the line --------------------------------------------------------------
    def fields(self, st: dict) -> list[str]:
        """The parts of the progress line, most important first."""
        i, elapsed = st["i"], st["elapsed"]
        if self.mode == "live":  # the clock goes on between iterations
            elapsed += time.monotonic() - st["at"]
        rate = i / elapsed if elapsed > 0 and i else None
        frac = eta = None
        if self.total:
            frac = min(1.0, i / self.total)
            eta = (self.total - i) / rate if rate else None
        if self.duration:
            dfrac = min(1.0, elapsed / self.duration)
            frac = dfrac if frac is None else max(frac, dfrac)
            left = max(0.0, self.duration - elapsed)
            eta = left if eta is None else min(eta, left)
        goal = f"/{self.total}" if self.total else ""
        limit = f"/{human_duration(self.duration)}" if self.duration else ""
        parts = [f"iter {i}{goal}"]
        if frac is not None:
            parts.append(f"{frac * 100:.0f}%")
        parts += [f"faults {st['faults']}", f"{human_duration(elapsed)}{limit}"]
        if eta is not None:
            parts.append(f"eta {human_duration(eta)}")
        if rate is not None:
            parts.append(f"{rate:.2f} it/s" if rate < 10 else f"{rate:.0f} it/s")
        parts += [f"recovered {st['recovered']}", f"rss {human_bytes(st['rss'])}"]
        if st["tps"]:
            parts.append(f"{st['tps']:.0f} tok/s")
        return parts

    def render_line(self, width: int) -> str:
        """One line of at most `width` characters.  Bounded runs get a bar (12 to 30 cells) after
        the iteration count; the other parts are dropped from the least important (tok/s,
        rss, recovered, rate) until the line fits; the bar goes only when nothing else can."""
        st = self._state
        if st is None:
            return "starting the engine..."[:width]
        parts = self.fields(st)
        frac = float(parts[1].strip().rstrip("%")) / 100 if (self.total or self.duration) else None
        # a bar of 22 costs only the optional parts (rate and after), one of 12 any part
        for bar_min, keep in (((22, 5), (12, 1), (0, 1)) if frac is not None else ((0, 1),)):
            kept = list(parts)
            while len(kept) > keep and len("  ".join(kept)) + (bar_min + 1 if bar_min else 0) > width:
                kept.pop()
            if not bar_min or len("  ".join(kept)) + bar_min + 1 <= width:
                break
        text = "  ".join(kept)
        if bar_min:
            cells = min(30, width - len(text) - 1) - 2
            done = int(round(frac * cells))
            text = f"{kept[0]} [{'#' * done}{'-' * (cells - done)}]" + "".join("  " + p for p in kept[1:])
        return text[:width]

    # -- output ----------------------------------------------------------------
    def _print_above(self, line: str) -> None:
        from rich.text import Text

        width = self._console.width
        self._console.print(Text(line[:width]), no_wrap=True, overflow="crop", crop=True)

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()


def _short_path(path) -> str:
    """The path relative to the current folder when it lies below it (logs/<run-id>)."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


class _Line:
    """The live line as rich renders it: exactly one line as wide as the terminal allows."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def __rich_console__(self, console, options):
        from rich.text import Text

        width = max(1, options.max_width)
        yield Text(self.progress.render_line(width), no_wrap=True, overflow="crop", end="")


def table(rows: list[tuple[str, str]], title: str | None = None) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    out = [title, "-" * len(title)] if title else []
    out += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(out)


def summary_table(summary: dict) -> str:
    rows = [
        ("run", summary["run_id"]),
        ("seed", str(summary.get("seed", "-"))),
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
        # `soak report` needs matplotlib (the [report] extra): offered only where it would work
        report = f"soak report {summary['run_dir']}   " if importlib.util.find_spec("matplotlib") else ""
        text += (f"\nnext: {report}soak gate {summary['run_dir']}"
                 f"   soak bundle {summary['run_dir']}")
    if summary.get("backend_requested") == "opencl" and summary.get("backend_actual") == "cpu":
        text += "\n\nWARNING: OpenCL was requested but MNN ran on the CPU (silent fallback). This is NOT an OpenCL run."
    return text


class ReproDisplay:
    """`soak repro` as it goes: on a terminal one live line (the step, the candidate's size,
    the runs so far) with each tried candidate printed above it; elsewhere one line per
    candidate; quiet: nothing."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.mode = display_mode(self.stream, quiet)
        self.quiet = self.mode == "quiet"
        self._state = {"step": "-", "size": "-", "what": ""}
        self._t0 = time.monotonic()
        self.tried = 0
        self.kept = 0
        self._live = None
        self._console = None

    def start(self, head: list[str]) -> None:
        if self.quiet:
            return
        if self.mode == "plain":
            self._write("\n".join(head) + "\n")
            return
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=self.stream, highlight=False, soft_wrap=False, emoji=False)
        for line in head:
            self._console.print(line, markup=False, highlight=False, crop=True)
        self._live = Live(_ReproLine(self), console=self._console, refresh_per_second=4, transient=True,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def status(self, *, step: str, size: str, what: str) -> None:
        self._state = {"step": step, "size": size, "what": what}

    def candidate(self, step: str, what: str, size: str, test, accepted: bool) -> None:
        self.tried += 1
        self.kept += bool(accepted)
        if self.quiet:
            return
        runs = f"{test.recurred}/{test.attempts}" if test else "-"
        line = f"{'KEEP' if accepted else 'drop'}  {step:<11} {what}  [{size}]  recurred {runs}"
        if self._live is not None:
            self._console.print(line, markup=False, highlight=False, crop=True)
        else:
            self._write(line + "\n")

    def render_line(self, width: int) -> str:
        st = self._state
        line = (f"repro  {human_duration(time.monotonic() - self._t0)}  step {st['step']}  "
                f"candidates {self.tried} (kept {self.kept})  size {st['size']}  {st['what']}")
        return line[:width]

    def done(self, lines: list[str]) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if not self.quiet:
            self._write("\n".join(lines) + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class _ReproLine:
    def __init__(self, display: ReproDisplay):
        self.display = display

    def __rich_console__(self, console, options):
        from rich.text import Text

        yield Text(self.display.render_line(max(1, options.max_width)), no_wrap=True, overflow="crop", end="")

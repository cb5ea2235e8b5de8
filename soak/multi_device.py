"""Run one soak per device, in parallel, and write one combined summary.

One device: its run folder is <out>/<run-id>/ as for a local run.
Several:    <out>/<run-id>/<device>/ each (a full run folder that gate, bundle,
            report and classify accept) and <out>/<run-id>/combined.json.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import sys
import threading
import time
from pathlib import Path

from soak import errors
from soak import signals as stop_signals
from soak.diagnostics import get_logger
from soak.loop.config import RunConfig, new_run_id
from soak.judges import judge_run
from soak.loop.runner import ABORT_GRACE_S, Runner
from soak.run_folder import SUMMARY

COMBINED_FILE = "combined.json"
diag = get_logger(__name__)
# after SIGTERM (or a second Ctrl-C) each device's run has this long to write its end; one that
# has not (its thread stuck in something no abort reaches, e.g. waiting for an offline phone) is
# reported as such and left behind, so the combined summary is written and soak exits
ABORT_JOIN_S = ABORT_GRACE_S + 20.0


def device_folder(serial: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", serial).strip("_") or "device"


def _worst(codes: list[int]) -> int:
    nonzero = [c for c in codes if c]
    if not nonzero:
        return 0
    hard = [c for c in nonzero if c not in (int(errors.ExitCode.FAILED), int(errors.ExitCode.INTERRUPTED))]
    return max(hard) if hard else max(nonzero)


def run_on_targets(cfg: RunConfig, target_specs: list[str], gate: str | None = None, baseline: str | None = None,
                   json_out: bool = False, junit: str | None = None, expectations=None) -> int:
    """One run per adb device; gate: a policy to judge each run with (junit: also write its
    JUnit there, FILE-<device>.xml with several); json_out: print the summary (one device)
    or combined.json (several) to stdout."""
    from soak.targets.adb.target import make_targets

    targets = make_targets(target_specs)
    run_id = cfg.run_id or new_run_id(cfg)
    several = len(targets) > 1
    group_dir = Path(cfg.out_dir) / run_id
    results: list[dict] = [{} for _ in targets]
    runners: list[Runner] = []
    for index, target in enumerate(targets):  # made here, so a signal reaches every one of them
        sub = dataclasses.replace(
            cfg, target=target.name, quiet=cfg.quiet or several,
            out_dir=str(group_dir) if several else cfg.out_dir,
            run_id=device_folder(target.serial) if several else run_id)
        results[index].update(target=target.name, serial=target.serial,
                              run_dir=str(Path(sub.out_dir) / sub.run_id))
        runners.append(Runner(sub, target))

    def one(index: int, target) -> None:
        entry = results[index]
        runner = runners[index]
        try:
            result = judge_run(runner.run(), runner.cfg.quiet)
            entry.update(exit_code=result.exit_code, summary=result.summary)
        except errors.SoakError as exc:
            entry.update(exit_code=int(exc.exit_code), error=exc.message, hint=exc.hint)
        except Exception as exc:  # one device's harness bug must not lose the others' runs
            entry.update(exit_code=int(errors.ExitCode.FAILED), error=f"{type(exc).__name__}: {exc}")
        finally:
            try:
                target.close()
            except Exception:
                pass

    if not several:
        one(0, targets[0])  # in this thread: the run takes Ctrl-C and SIGTERM itself
        return _finish(cfg, run_id, group_dir, results, several, gate, baseline, json_out, junit, False, expectations)
    # daemon threads: one that does not end after an abort must not keep soak from exiting
    threads = [threading.Thread(target=one, args=(i, t), name=f"soak-{t.name}", daemon=True)
               for i, t in enumerate(targets)]
    signals = _Signals(runners)
    previous = stop_signals.catch(signals.handle)
    try:  # until combined.json is written: a signal from here on changes nothing
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive() and not signals.overdue():
                t.join(0.2)
        for entry, t in zip(results, threads):
            if t.is_alive():
                entry.update(exit_code=int(errors.ExitCode.TERMINATED if signals.terminated
                                           else errors.ExitCode.INTERRUPTED),
                             error=f"the run did not end within {ABORT_JOIN_S:g}s of the abort; "
                                   f"its run folder may lack run_end and {SUMMARY}")
        return _finish(cfg, run_id, group_dir, results, several, gate, baseline, json_out, junit,
                       signals.terminated, expectations)
    finally:
        stop_signals.restore(previous)


def _finish(cfg: RunConfig, run_id: str, group_dir: Path, results: list[dict], several: bool, gate: str | None,
            baseline: str | None, json_out: bool, junit: str | None, terminated: bool,
            expectations=None) -> int:
    """Gate each run (its causes labelled by `expectations`, soak.outputs.expectations), write
    combined.json (several devices), print; the command's exit code."""
    if gate:
        from soak.outputs.gate import gate_run

        for entry in results:
            if entry.get("summary") is not None:
                causes = None
                if expectations is not None:
                    from soak.rerun import rerun_unexpected

                    causes = rerun_unexpected(Path(entry["run_dir"]), expectations, 0)
                passed, _ = gate_run(Path(entry["run_dir"]), gate, baseline=baseline,
                                     junit_path=_junit_path(junit, entry, several), quiet=cfg.quiet, causes=causes)
                entry["gate_passed"] = passed
                if not passed and entry["exit_code"] == 0:
                    entry["exit_code"] = int(errors.ExitCode.FAILED)

    # SIGTERM says stop: 143 even when every run had ended by then (as a single run, killed then)
    code = int(errors.ExitCode.TERMINATED) if terminated else _worst([e.get("exit_code", 1) for e in results])
    combined = {"schema": 1, "run_id": run_id, "exit_code": code, "devices": results,
                "totals": _totals(results)}
    if several:
        group_dir.mkdir(parents=True, exist_ok=True)
        (group_dir / COMBINED_FILE).write_text(json.dumps(combined, indent=2) + "\n")
        if not cfg.quiet:
            print(_table(combined), file=sys.stderr, flush=True)  # people text: stderr
    if json_out:
        print(json.dumps(combined if several else (results[0].get("summary") or results[0]), indent=2))
    if not several and results[0].get("error"):
        raise _reraise(results[0])  # one device: its error is the command's error
    for entry in results:
        if entry.get("error"):
            print(f"soak: {entry['target']}: error: {entry['error']}" +
                  (f"\n  hint: {entry['hint']}" if entry.get("hint") else ""), file=sys.stderr)
    return code


class _Signals:
    """Ctrl-C and SIGTERM for several devices' runs (each runs in a thread of its own, and only
    the main thread takes signals).  The first Ctrl-C stops every device after its iteration in
    flight; SIGTERM or a second Ctrl-C aborts every device's iteration in flight
    (Runner.abort); any signal after that is noted and changes nothing, so each run's run_end
    and summary and the combined summary are still written.  Never raises in the main thread."""

    def __init__(self, runners: list[Runner]):
        self.runners = runners
        self.interrupted = False
        self.terminated = False
        self.aborted_at: float | None = None

    def overdue(self) -> bool:
        """Aborted longer ago than the runs get to end."""
        return self.aborted_at is not None and time.monotonic() - self.aborted_at > ABORT_JOIN_S

    def handle(self, signum, frame) -> None:
        terminated = signum == signal.SIGTERM
        if self.aborted_at is not None:
            diag.info("already stopping every device")
            return
        if not terminated and not self.interrupted:
            self.interrupted = True
            diag.info("stopping every device after its current iteration (Ctrl-C again to abort them)",
                      signal=stop_signals.name(signum))
            for runner in self.runners:
                runner.interrupted = True
            return
        self.interrupted = True
        self.terminated = terminated
        self.aborted_at = time.monotonic()
        diag.info(f"{'SIGTERM' if terminated else 'Ctrl-C again'}: abandoning every device's iteration in flight, "
                  "writing run_end and the summaries", signal=stop_signals.name(signum))
        for runner in self.runners:
            runner.abort(terminated)


def _junit_path(junit: str | None, entry: dict, several: bool) -> Path | None:
    """--junit FILE: one device writes FILE; several write FILE-<device>.xml each."""
    if not junit:
        return None
    path = Path(junit)
    return path.with_name(f"{path.stem}-{device_folder(entry['serial'])}{path.suffix}") if several else path


def _reraise(entry: dict) -> errors.SoakError:
    for cls in errors.SoakError.__subclasses__():
        if int(cls.exit_code) == entry["exit_code"]:
            return cls(entry["error"], entry.get("hint"))
    return errors.SoakError(entry["error"], entry.get("hint"))


def _totals(results: list[dict]) -> dict:
    totals = {"devices": len(results), "iterations": 0, "faults": 0, "faults_by_kind": {}}
    for entry in results:
        s = entry.get("summary") or {}
        totals["iterations"] += s.get("iterations") or 0
        totals["faults"] += s.get("faults") or 0
        for kind, n in (s.get("faults_by_kind") or {}).items():
            totals["faults_by_kind"][kind] = totals["faults_by_kind"].get(kind, 0) + n
    return totals


def _table(combined: dict) -> str:
    rows = [("device", "iterations", "faults", "end", "exit")]
    for e in combined["devices"]:
        s = e.get("summary") or {}
        rows.append((e["serial"], str(s.get("iterations", "-")), str(s.get("faults", "-")),
                     s.get("end_reason") or (e.get("error") or "-")[:40], str(e.get("exit_code"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines) + f"\ncombined: {combined['totals']['iterations']} iterations, " \
                              f"{combined['totals']['faults']} faults on {combined['totals']['devices']} devices"

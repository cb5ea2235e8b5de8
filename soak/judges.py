"""What `soak run` does once the loop has written its run folder: the judges.

The loop (soak.loop.runner) is a producer only: events, manifest, summary.json.
The command that started it (soak run, one device or several; replay,
compare, the library's soak.run) hands the finished folder to the analysis
stages here: verdicts.json, classification.json, summary.json's `analysis`,
then the summary table on stderr.  A failing stage is reported in the
summary, never fatal: the run's own outcome (its exit code) stands.
"""

from __future__ import annotations

import sys
from pathlib import Path

from soak import errors, run_folder
from soak.loop.console import summary_table
from soak.loop.runner import RunResult, run_soak


def analyse(run_dir: Path) -> dict:
    """Run the analysis stages; a failing stage is reported, not fatal.
    Verdicts come first: the classifier reads their memory symptoms."""
    from soak.analysis.verdicts import compute_verdicts, summary_lines
    from soak.catalog.classify import classify_run

    done = {}
    try:
        done["verdicts"] = {"ok": True, "lines": summary_lines(compute_verdicts(run_dir))}
    except Exception as exc:
        done["verdicts"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        result = classify_run(run_dir)
        findings = result.get("findings", []) if isinstance(result, dict) else []
        done["classification"] = {"findings": len(findings),
                                  "known": sum(1 for f in findings if f.get("known"))}
    except errors.SoakError as exc:
        done["classification"] = {"error": exc.message}
    except Exception as exc:
        done["classification"] = {"error": f"{type(exc).__name__}: {exc}"}
    return done


def judge_run(result: RunResult, quiet: bool) -> RunResult:
    """The judges of a run that ended (the loop returned): summary.json gets `analysis`, and
    unless quiet the summary table goes to stderr (stdout is for --json)."""
    summary = result.summary
    if result.aborted:  # the user wants out now: the analysis stages run on demand (gate, report)
        summary["analysis"] = {"skipped": f"run {summary.get('end_reason')}"}
    else:
        summary["analysis"] = analyse(result.run_dir)
    run_folder.write_json(Path(result.run_dir) / run_folder.SUMMARY, summary)
    if not quiet:
        print(summary_table(summary), file=sys.stderr, flush=True)
    return result


def run_judged(cfg, target=None) -> RunResult:
    """A soak run as `soak run` makes it: the loop, then its judges."""
    return judge_run(run_soak(cfg, target), cfg.quiet)

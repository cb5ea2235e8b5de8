"""soak gate: judge a run against a policy; exit 0 pass, 1 fail, 3 bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from soak.errors import ExitCode
from soak.run_folder import GATE

DESCRIPTION = """

Without --policy the default gate applies: no critical fault (crash, hang),
no memory leak or ratchet, every recovery succeeds, and in a run checked against a
reference (soak run --reference) no wrong or non-finite turn.  Every gate also checks
run.complete: a killed, cut-short or empty run fails.  Rules that cannot be
judged (no data) are skipped, never passed.  Policy format (TOML, every rule optional):

  [gate]      name, required_backend = "opencl", min_iterations = 100
  [errors]    max_count = 0, max_rate = 0.01, allow = ["<fault id or sig-...>"], allow_all_known = false
  [errors.severity]  critical = { max_count = 0 }, high = { max_rate = 0.001 }
  [errors.fault]     "<fault id or sig-...>" = { max_count = 3 }
  [memory]    max_leak_slope = "256KiB" (per iteration), max_leak_slope_per_hour = "1GiB",
              max_kept_after_reset = "64MiB" (a ratchet or retained growth up to this passes),
              series = ["rss", "pss", "gpu_live_bytes"], require_return = true
  [recovery]  min_rate = 0.9, min_score = 50
  [perf]      max_tps_regression_pct = 10 (needs --baseline), max_drift_pct = 20
  [oracle]    max_wrong = 0, max_wrong_rate = 0.01, max_nonfinite = 0, max_kl_drift = 0.001 (nats),
              required = true (a run with no checked turn fails); with [oracle] the oracle's
              wrong_output / nonfinite_logits are judged there, not by [errors]

Expected failures and flakes (--expectations FILE, TOML): a baseline of known failing
causes and of known flakes, per device/driver/model/backend where needed; they fail no
errors.* rule and are labelled `expected` / `flake` (the gate record's `causes`, one JUnit case
`cause.<key>` each, the merge table):

  [[expected]]  cause = "soak-out-of-resources", driver = "512.7*", reason = "MNN#3112"
  [[flake]]     cause = "sig-*", title = "*no outputs*", device = "Pixel-8"

--rerun-unexpected N re-runs each cause not listed up to N times (the iteration replay of
`soak replay`; `soak repro`'s single-cause replay where installed) and labels it `flake`
when it never comes back.

Exit codes: 0 the gate passed, 1 it failed, 3 bad input (run folder, policy, baseline);
with --junit, bad input still writes a JUnit file with one <error> case.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder (logs/<run-id>)")
    p.add_argument("--baseline", metavar="RUN", help="baseline run folder (for the tok/s regression rule)")
    p.add_argument("--policy", metavar="FILE", help="gate policy (TOML); default: the built-in gate")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML here (one test case per rule)")
    p.add_argument("--json", action="store_true", help="print the rule results as JSON")
    p.add_argument("--expectations", metavar="FILE", help="baseline of expected failures and flakes (TOML)")
    p.add_argument("--rerun-unexpected", type=int, default=0, metavar="N",
                   help="re-run each unexpected cause up to N times; one that never comes back is a flake")
    p.add_argument("--out", metavar="FILE", help="write the rule results and verdicts here "
                   f"(default RUN/{GATE}; the run's own files are never rewritten)")


def run(args: argparse.Namespace) -> int:
    from soak.diagnostics import get_logger
    from soak.errors import BadInput

    from soak.outputs.gate import judge, print_results, run_id_of, state_note
    from soak.outputs.junit import write_error_junit
    from soak.outputs.policy import default_policy, load_policy

    try:
        policy = load_policy(args.policy) if args.policy else default_policy()
        causes = None
        if args.expectations or args.rerun_unexpected:
            from soak.outputs.expectations import load_expectations
            from soak.rerun import rerun_unexpected

            expectations = load_expectations(args.expectations) if args.expectations else None
            causes = rerun_unexpected(args.run, expectations, args.rerun_unexpected,
                                      log=get_logger("soak.rerun").info)
    except BadInput as exc:
        if args.junit:  # CI shows why the gate did not run
            write_error_junit(args.junit, "soak-gate", Path(args.run).name, exc.message, exc.hint)
        raise
    passed, results, run_folder = judge(args.run, policy, args.baseline, args.junit, args.out, causes)
    note = state_note(run_folder)
    if note:
        get_logger(__name__).warning(note)  # judged on a run that is not complete
    if args.json:
        print(json.dumps({"run_id": run_id_of(run_folder), "passed": passed, "policy": policy.path,
                          **({"causes": causes} if causes is not None else {}),
                          "rules": [{"name": r.name, "status": r.status, "passed": r.passed and not r.skipped,
                                     "message": r.message, "details": r.details} for r in results]}, indent=2))
    else:
        print_results(results, run_id_of(run_folder))
    return int(ExitCode.OK if passed else ExitCode.FAILED)

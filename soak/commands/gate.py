"""soak gate: judge a run against a policy; exit 0 pass, 1 fail, 3 bad input."""

from __future__ import annotations

import argparse
import json

from soak.errors import ExitCode

DESCRIPTION = """

Without --policy the default gate applies: no critical fault (crash, hang),
no memory leak, every recovery succeeds.  Policy format (TOML, every rule optional):

  [gate]      name, required_backend = "opencl", min_iterations = 100
  [errors]    max_count = 0, max_rate = 0.01, allow = ["<fault id or sig-...>"], allow_all_known = false
  [errors.severity]  critical = { max_count = 0 }, high = { max_rate = 0.001 }
  [errors.fault]     "<fault id or sig-...>" = { max_count = 3 }
  [memory]    max_leak_slope = "256KiB" (per iteration), max_leak_slope_per_hour = "1GiB",
              series = ["rss", "pss", "gpu_live_bytes"], require_return = true
  [recovery]  min_rate = 0.9, min_score = 50
  [perf]      max_tps_regression_pct = 10 (needs --baseline), max_drift_pct = 20

Exit codes: 0 the gate passed, 1 it failed, 3 bad input (run folder, policy, baseline).
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder (logs/<run-id>)")
    p.add_argument("--baseline", metavar="RUN", help="baseline run folder (for the tok/s regression rule)")
    p.add_argument("--policy", metavar="FILE", help="gate policy (TOML); default: the built-in gate")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML here (one test case per rule)")
    p.add_argument("--json", action="store_true", help="print the rule results as JSON")


def run(args: argparse.Namespace) -> int:
    from soak.analysis.runfolder import RunFolder
    from soak.outputs.gate import evaluate, print_results
    from soak.outputs.junit import write_junit
    from soak.outputs.policy import default_policy, load_policy

    policy = load_policy(args.policy) if args.policy else default_policy()
    run_folder = RunFolder(args.run)
    if args.baseline:
        RunFolder(args.baseline)  # bad input is exit 3 before any judging
    results, _ = evaluate(run_folder, policy, args.baseline)
    passed = all(r.passed for r in results)
    if args.junit:
        write_junit(results, args.junit, policy.name, run_folder.run_id)
    if args.json:
        print(json.dumps({"run_id": run_folder.run_id, "passed": passed, "policy": policy.path,
                          "rules": [{"name": r.name, "passed": r.passed, "message": r.message, "details": r.details}
                                    for r in results]}, indent=2))
    else:
        print_results(results, run_folder.run_id)
    return int(ExitCode.OK if passed else ExitCode.FAILED)

"""The CI gate: judge a run folder against a policy (soak.outputs.policy).

Each policy rule becomes one `RuleResult` (one JUnit test case); the gate
passes when no rule fails.  A rule that could not be judged (no data, no
recovery to check) is *skipped*, never passed.  Every gate starts with
`run.complete`: a run that was killed, ended early, has no `run_end`, or
whose events.jsonl is empty or unreadable fails it, so an empty run can
never pass.  Reads only the run folder (and a baseline run folder for the
throughput rule); it computes the verdicts in memory and does not rewrite
verdicts.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from soak import run_folder
from soak.end_reasons import conclude
from soak.analysis.loaded_run import RunFolder
from soak.errors import BadInput
from soak.analysis.verdicts import compute_verdicts
from soak.fault_kinds import ORACLE_KINDS
from soak.outputs._findings import DERIVED_KINDS, finding_label, findings_with_events, open_run
from soak.outputs.policy import Limit, Policy, default_policy, load_policy


@dataclass
class RuleResult:
    name: str           # e.g. errors.severity.critical
    passed: bool
    message: str        # one line: why it passed or failed
    details: list[str] = field(default_factory=list)
    skipped: bool = False   # not judged (no data); `passed` is then True only so it fails nothing
    time_s: float = 0.0     # time spent judging it
    counted: list[str] = field(default_factory=list)  # signatures of the findings an errors.* rule counted

    @property
    def status(self) -> str:
        return "skipped" if self.skipped else "passed" if self.passed else "failed"

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n:.0f} B"


def _end(v: float | None) -> str:
    """An interval end; None means the interval is open (too few or too correlated samples)."""
    return "open" if v is None else _size(v)


def _limit_check(name: str, what: str, count: int, iterations: int, limit: Limit, items: list[dict]) -> RuleResult:
    rate = count / iterations if iterations else float(count > 0)
    problems = []
    if limit.max_count is not None and count > limit.max_count:
        problems.append(f"{count} > max_count {limit.max_count}")
    if limit.max_rate is not None and rate > limit.max_rate:
        problems.append(f"rate {rate:.4g}/iteration > max_rate {limit.max_rate}")
    details = [f"{finding_label(f)} [{f.get('severity')}] x{_count(f)}: {f.get('title') or f.get('signature_text')} "
               f"(first at iteration {f.get('first_iteration')})" for f in items]
    if problems:
        return RuleResult(name, False, f"{what}: {'; '.join(problems)} over {iterations} iterations", details)
    return RuleResult(name, True, f"{what}: {count} in {iterations} iterations (rate {rate:.4g}) within limits", details)


def _count(f: dict) -> int:
    return len(f.get("occurrences") or []) or int(f.get("events") or 0)


def _error_rules(run: RunFolder, policy: Policy, causes: list[dict] | None = None) -> list[RuleResult]:
    if policy.errors is None and not policy.by_severity and not policy.by_fault:
        return []
    skip = DERIVED_KINDS | (ORACLE_KINDS if policy.oracle else frozenset())  # [oracle] judges its own
    findings = [f for f in findings_with_events(run) if f.get("kind") not in skip]
    iters = max(run.iteration_count, 0)
    labels: dict[str, set] = {}   # finding signature -> the labels of the causes it belongs to
    for c in causes or []:
        for sig in c["findings"]:
            labels.setdefault(sig, set()).add(c["label"])

    def allowed(f: dict) -> bool:
        return (f.get("fault_id") in policy.allow or f.get("signature") in policy.allow
                or (policy.allow_all_known and bool(f.get("known")))
                or bool(labels.get(f.get("signature"))) and labels[f.get("signature")] <= {"expected", "flake"})

    counted = [f for f in findings if not allowed(f)]
    out = []
    if policy.errors is not None:
        r = _count_signatures(_limit_check("errors.total", "faults not allowed as known", sum(map(_count, counted)),
                                           iters, policy.errors, counted), counted)
        n_allowed = len(findings) - len(counted)
        if n_allowed:
            r.details.append(f"{n_allowed} finding(s) allowed as known and not counted")
        out.append(r)
    for sev, limit in policy.by_severity.items():
        items = [f for f in counted if f.get("severity") == sev]
        out.append(_count_signatures(_limit_check(f"errors.severity.{sev}", f"{sev} faults", sum(map(_count, items)),
                                                  iters, limit, items), items))
    for key, limit in policy.by_fault.items():
        items = [f for f in findings if key in (f.get("fault_id"), f.get("signature"))]
        out.append(_limit_check(f"errors.fault.{key}", f"fault {key}", sum(map(_count, items)), iters, limit, items))
    return out


def _count_signatures(rule: RuleResult, items: list[dict]) -> RuleResult:
    rule.counted = [f.get("signature") for f in items if f.get("signature")]
    return rule


def cause_results(causes: list[dict], results: list[RuleResult]) -> list[RuleResult]:
    """One result per labelled root cause (JUnit: soak.gate.cause): expected and flake pass with
    their label and reason; an unexpected one fails when a failed errors.* rule counted it."""
    failing = {sig for r in results if not r.passed and not r.skipped for sig in r.counted}
    out = []
    for c in causes:
        head = f"[{c['label']}] {c['title'] or c['key']}" + (f": {c['reason']}" if c.get("reason") else "")
        failed = c["label"] == "unexpected" and bool(failing & set(c["findings"]))
        out.append(RuleResult(f"cause.{c['key']}", not failed, head,
                              [f"label: {c['label']}", f"first at iteration {c.get('first_iteration')}"]
                              + ([f"re-runs: {c['reruns']}"] if c.get("reruns") else [])))
    return out


def _backend_rule(run: RunFolder, policy: Policy) -> list[RuleResult]:
    want = policy.required_backend
    if not want:
        return []
    requested, actual = run.backend_requested, run.backend_actual
    fallbacks = [e for e in run.faults if e.get("kind") == "cpu_fallback"]
    problems = []
    if requested and requested != want:
        problems.append(f"the run asked for backend {requested}, not {want}")
    if actual is None:
        problems.append("the run never recorded which backend it actually ran on (no successful load)")
    elif actual != want:
        problems.append(f"it actually ran on {actual}")
    if fallbacks and want != "cpu":
        problems.append(f"{len(fallbacks)} CPU fallback(s): {fallbacks[0].get('line') or 'cpu_fallback'}")
    if problems:
        return [RuleResult("backend.required", False, f"required backend {want}: " + "; ".join(problems))]
    return [RuleResult("backend.required", True, f"ran on {actual} as required")]


def _memory_rules(policy: Policy, verdicts: dict) -> list[RuleResult]:
    judged = (policy.max_leak_slope is not None or policy.max_leak_slope_per_hour is not None
              or policy.max_kept_after_reset is not None)
    if not judged and not policy.require_return:
        return []
    mem = verdicts["memory"]
    out = []
    if judged:
        for name in policy.series:
            v = mem["series"].get(name) or {"verdict": "no_data"}
            per_it = (v.get("slope_per_iteration") or {}).get("value")
            per_h = (v.get("slope_per_hour") or {}).get("value")
            text = (f"{name}: {v['verdict']}, slope {_size(per_it)}/iteration "
                    f"[{_end((v.get('slope_per_iteration') or {}).get('lo'))}, "
                    f"{_end((v.get('slope_per_iteration') or {}).get('hi'))}], {_size(per_h)}/hour, "
                    f"p={(v.get('test') or {}).get('p', float('nan')):.3g}")
            if v["verdict"] in ("no_data", "insufficient"):
                out.append(RuleResult(f"memory.leak.{name}", True, f"{name}: {v['verdict']} (not judged)",
                                      skipped=True))
                continue
            problems = []
            kept = v.get("kept_after_reset") or {}
            if v["verdict"] in ("ratchet", "retained") and kept.get("bytes") is not None:
                limit = policy.max_kept_after_reset
                if limit is None:
                    problems.append(f"{v['verdict']}: {_size(kept['bytes'])} kept after reset "
                                    f"({100 * (kept.get('fraction') or 0):.0f}% of {_size(kept.get('start'))})"
                                    + (" follows the longest context" if v["verdict"] == "ratchet" else
                                       ", not explained by the context")
                                    + " (allow with [memory].max_kept_after_reset)")
                elif kept["bytes"] > limit:
                    problems.append(f"{v['verdict']}: {_size(kept['bytes'])} kept after reset "
                                    f"> max_kept_after_reset {_size(limit)}")
            if v["verdict"] == "leak":
                if policy.max_leak_slope is not None and per_it is not None and per_it > policy.max_leak_slope:
                    problems.append(f"leaks {_size(per_it)}/iteration > max {_size(policy.max_leak_slope)}")
                if policy.max_leak_slope_per_hour is not None and per_h is not None and per_h > policy.max_leak_slope_per_hour:
                    problems.append(f"leaks {_size(per_h)}/hour > max {_size(policy.max_leak_slope_per_hour)}")
            out.append(RuleResult(f"memory.leak.{name}", not problems, "; ".join(problems) or text, [text]))
    if policy.require_return:
        ret = mem.get("returned_after_recovery")
        bad = [r for r in mem.get("after_recovery") or []
               if any(s.get("returned") is False for s in r["series"].values())]
        if ret is False:
            out.append(RuleResult("memory.return_after_recovery", False,
                                  f"memory did not come back after {len(bad)} recovery(ies), first at iteration "
                                  f"{bad[0].get('iteration')} (by {bad[0].get('recovered_by')})",
                                  [f"iteration {r.get('iteration')}: " + ", ".join(
                                      f"{k} {_size(s['after'])} vs start {_size(s.get('start_level'))}"
                                      for k, s in r["series"].items() if s.get("returned") is False) for r in bad]))
        elif ret is None:
            out.append(RuleResult("memory.return_after_recovery", True, "no recovery to check", skipped=True))
        else:
            out.append(RuleResult("memory.return_after_recovery", True, "memory came back after every recovery"))
    return out


def _recovery_rules(policy: Policy, verdicts: dict) -> list[RuleResult]:
    rec = verdicts["recovery"]
    out = []
    details = [f"{k}: {v['recovered']}/{v['attempts']} recovered, by {v['by_step']}" for k, v in rec["per_kind"].items()]
    if policy.min_recovery_rate is not None:
        if rec["rate"] is None:
            out.append(RuleResult("recovery.rate", True, "no recovery attempt was needed", skipped=True))
        else:
            ok = rec["rate"] >= policy.min_recovery_rate
            out.append(RuleResult("recovery.rate", ok,
                                  f"recovered {rec['recovered']}/{rec['attempts']} (rate {rec['rate']:.3g}) "
                                  f"{'>=' if ok else '<'} min_rate {policy.min_recovery_rate}", details))
    if policy.min_recovery_score is not None:
        if rec["score"] is None:
            out.append(RuleResult("recovery.score", True, "no recovery attempt was needed", skipped=True))
        else:
            ok = rec["score"] >= policy.min_recovery_score
            out.append(RuleResult("recovery.score", ok, f"recovery score {rec['score']} "
                                  f"{'>=' if ok else '<'} min_score {policy.min_recovery_score}", details))
    return out


def _perf_rules(policy: Policy, verdicts: dict, baseline_given: bool) -> list[RuleResult]:
    out = []
    if policy.max_tps_regression_pct is not None:
        base = verdicts["perf"].get("baseline")
        reg = (base or {}).get("tps_regression_pct")
        if not baseline_given:
            out.append(RuleResult("perf.tps_regression", False,
                                  "the policy limits the tok/s regression but no baseline run was given (--baseline RUN)"))
        elif reg is None:
            out.append(RuleResult("perf.tps_regression", False, "no decode tok/s to compare (run or baseline has no successful iteration)"))
        else:
            m = base["metrics"]["decode_tps"]
            ok = reg <= policy.max_tps_regression_pct
            out.append(RuleResult("perf.tps_regression", ok,
                                  f"decode {m['run']:.4g} tok/s vs baseline {m['baseline']:.4g} "
                                  f"({base['baseline_run_id']}): {reg:+.1f}% regression "
                                  f"{'<=' if ok else '>'} max {policy.max_tps_regression_pct}%"))
    if policy.max_drift_pct is not None:
        d = verdicts["perf"]["drift"]["decode_tps"]
        drift = d.get("drift_pct")
        if drift is None:
            out.append(RuleResult("perf.drift", True, f"decode tok/s: {d['verdict']} (not judged)", skipped=True))
        else:
            lost = -drift
            ok = not (d["verdict"] == "degrading" and lost > policy.max_drift_pct)
            beyond = " beyond what the context explains" if "verdict_raw" in d else ""
            out.append(RuleResult("perf.drift", ok, f"decode tok/s changed {drift:+.1f}% over the run{beyond} "
                                  f"({d['verdict']}); max loss {policy.max_drift_pct}%"))
    past = (verdicts["perf"]["drift"]["decode_tps"].get("context") or {}).get("past_context_limit")
    if past and (policy.max_drift_pct is not None or policy.max_tps_regression_pct is not None):
        out.append(RuleResult("perf.context_limit", False,
                              f"{past['iterations']} iteration(s) ran past max_position_embeddings "
                              f"{past['max_position_embeddings']} (first at iteration {past['first_iteration']}): "
                              f"decode {past['median']:.4g} tok/s, {past['slowdown']:.2f}x slower than the context predicts"))
    return out


def _g(v) -> str:
    return "?" if not isinstance(v, (int, float)) else f"{v:.3g}"


def _oracle_rules(policy: Policy, verdicts: dict) -> list[RuleResult]:
    """[oracle]: the teacher-forced turns' verdict (soak.analysis.oracle_verdict).  A run with no
    checked turn skips every rule, unless `required` (then oracle.checked fails)."""
    if not policy.oracle:
        return []
    v = verdicts.get("oracle") or {"checked": 0}
    n = v["checked"]
    out = []
    if n == 0:
        why = ("no turn was checked against a reference" if verdicts.get("oracle") is None
               else "the run had a reference but checked no turn")
        if policy.oracle_required:
            return [RuleResult("oracle.checked", False, f"{why}; [oracle].required: run with --reference RUN "
                               "(make one with `soak reference`)")]
        return [RuleResult("oracle.checked", True, f"{why} (not judged)", skipped=True)]
    if policy.oracle_required:
        out.append(RuleResult("oracle.checked", True, f"{n} turns checked against {v.get('reference') or 'a reference'}"))
    details = [f"iteration {t['i']} (conversation {t['conversation']}, turn {t['turn']}): "
               + (f"non-finite logits from step {t['first_nonfinite']}" if t.get("nonfinite_steps") else
                  f"first step over the thresholds {t.get('first_over')}, max |delta| {_g(t.get('abs_max'))}, "
                  f"max KL {_g(t.get('kl_max'))}") for t in v.get("wrong_turns") or []][:20]
    thr = v.get("thresholds") or {}
    against = f" (thresholds: {thr.get('class')} class, |delta| {thr.get('abs_max')}, KL {thr.get('kl_max')})" if thr else ""
    if policy.max_wrong is not None:
        ok = v["wrong"] <= policy.max_wrong
        first = f", first at iteration {v['first_wrong_iteration']}" if v["first_wrong_iteration"] is not None else ""
        out.append(RuleResult("oracle.wrong", ok, f"{v['wrong']} wrong turn(s) of {n} checked{first} "
                              f"{'<=' if ok else '>'} max_wrong {policy.max_wrong}{against}",
                              [d for d in details if "non-finite" not in d]))
    if policy.max_nonfinite is not None:
        ok = v["nonfinite"] <= policy.max_nonfinite
        first = (f", first at iteration {v['first_nonfinite_iteration']}"
                 if v["first_nonfinite_iteration"] is not None else "")
        out.append(RuleResult("oracle.nonfinite", ok, f"{v['nonfinite']} turn(s) with NaN/inf logits of {n} checked"
                              f"{first} {'<=' if ok else '>'} max_nonfinite {policy.max_nonfinite}",
                              [d for d in details if "non-finite" in d]))
    if policy.max_wrong_rate is not None:
        rate = v["wrong_rate"] or 0.0
        ok = rate <= policy.max_wrong_rate
        out.append(RuleResult("oracle.wrong_rate", ok, f"{v['wrong'] + v['nonfinite']}/{n} checked turns wrong "
                              f"(rate {rate:.4g}) {'<=' if ok else '>'} max_wrong_rate {policy.max_wrong_rate}",
                              details))
    if policy.max_kl_drift is not None:
        d = v.get("drift") or {}
        if d.get("verdict") in (None, "insufficient"):
            out.append(RuleResult("oracle.kl_drift", True, f"per-turn KL: {d.get('samples', 0)} turns, too few to "
                                  "judge a drift (not judged)", skipped=True))
        else:
            growth = d.get("growth") or 0.0
            ok = not (d["verdict"] == "growing" and growth > policy.max_kl_drift)
            out.append(RuleResult("oracle.kl_drift", ok, f"per-turn mean KL {d['verdict']}: {d['start']:.3g} -> "
                                  f"{d['end']:.3g} nats (growth {growth:.3g}, p={d['p']:.3g}) over iterations "
                                  f"{d['first_iteration']}..{d['last_iteration']}; max_kl_drift {policy.max_kl_drift}"))
    return out


def completeness(run: RunFolder) -> RuleResult:
    """run.complete: the run ended by itself, after the work it was asked for, and left readable events.
    A run still being written (soak.run_folder.state) is not judged: it is in progress."""
    try:
        n_events = run.events_seen
    except run_folder.DamagedEvents as exc:
        if exc.line > 1:  # events before the damage: bad input (exit 3, file:line), as for every judge
            raise
        return RuleResult("run.complete", False, f"{run_folder.EVENTS} cannot be read: {exc.message}")
    if not n_events:
        return RuleResult("run.complete", False, f"{run_folder.EVENTS} holds no event (empty, or nothing but a cut-off line)")
    if not run.event_kinds & {"run_start", "iteration", "run_end"}:
        return RuleResult("run.complete", False, f"{run_folder.EVENTS} holds no soak run event ({n_events} line(s) of "
                          "something else)")
    end = run.first("run_end")
    done = run.iterations_seen
    if end is None:
        if run.state == run_folder.RUNNING:
            return RuleResult("run.complete", True, f"in progress: no run_end yet and its writer is running "
                              f"({done} iteration(s) so far)", skipped=True)
        return RuleResult("run.complete", False,
                          f"no run_end: the run was killed ({done} iteration(s), last event at t={run.elapsed_s} s)")
    end = conclude(end.get("reason"), done, (run.manifest.get("config") or {}).get("iterations"))
    return RuleResult("run.complete", end.passed, end.message)


def _timed(fn, *args) -> list[RuleResult]:
    t0 = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t0
    for r in out:
        r.time_s += dt / max(1, len(out))
    return out


def evaluate(run_dir, policy: Policy | None = None, baseline=None,
             causes: list[dict] | None = None) -> tuple[list[RuleResult], dict | None]:
    """causes: the run's root causes labelled expected / flake / unexpected
    (soak.outputs.expectations.label_causes): expected and flake ones fail no errors.* rule,
    and each becomes a `cause.<key>` result."""
    run = run_dir if isinstance(run_dir, RunFolder) else open_run(run_dir)
    policy = policy or default_policy()
    base = None if baseline is None else RunFolder(baseline)
    t0 = time.perf_counter()
    complete = completeness(run)
    complete.time_s = time.perf_counter() - t0
    if not complete.passed and complete.message.startswith(run_folder.EVENTS):
        return [complete], None     # no event to judge any other rule on
    t0 = time.perf_counter()
    verdicts = compute_verdicts(run, base, write=False)
    share = (time.perf_counter() - t0)
    results: list[RuleResult] = [complete]
    if policy.min_iterations is not None:
        n = run.iteration_count
        ok = n >= policy.min_iterations
        end = (run.first("run_end") or {}).get("reason", "no run_end (killed?)")
        results.append(RuleResult("run.min_iterations", ok, f"{n} iterations {'>=' if ok else '<'} "
                                  f"{policy.min_iterations} required (run ended by {end})"))
    results += _timed(_backend_rule, run, policy)
    results += _timed(_error_rules, run, policy, causes)
    mem = _timed(_memory_rules, policy, verdicts)
    results += mem
    results += _timed(_recovery_rules, policy, verdicts)
    perf = _timed(_perf_rules, policy, verdicts, base is not None)
    results += perf
    oracle = _timed(_oracle_rules, policy, verdicts)
    results += oracle
    for r in mem + perf + oracle:           # the verdicts these rules read took time too
        r.time_s += share / max(1, len(mem + perf + oracle))
    if causes is not None:
        results += cause_results(causes, results)
    return results, verdicts


def gate_record(results: list[RuleResult], run: RunFolder, policy: Policy, verdicts: dict,
                causes: list[dict] | None = None) -> dict:
    """What the gate writes to RUN/gate.json (its own output; the run's files are inputs);
    `causes` (the labels) only when the gate was given expectations or re-runs."""
    extra = {} if causes is None else {"causes": causes}
    return {"run_id": run_id_of(run), "passed": all(r.passed for r in results), "policy": policy.path, **extra,
            "policy_name": policy.name, "state": run.state,
            "rules": [{"name": r.name, "status": r.status, "passed": r.passed and not r.skipped,
                       "message": r.message, "details": r.details} for r in results],
            "verdicts": verdicts}


def write_gate(path, results: list[RuleResult], run: RunFolder, policy: Policy, verdicts: dict,
               causes: list[dict] | None = None) -> None:
    run_folder.write_json(path, gate_record(results, run, policy, verdicts, causes))


def state_note(run: RunFolder) -> str | None:
    """One line when the run is not complete: judged on the events so far."""
    if run.state == run_folder.RUNNING:
        return f"soak gate: {run_id_of(run)} is in progress (no run_end yet, its writer is running): judged on the events so far"
    if run.state == run_folder.ENDED_WITHOUT_RUN_END:
        return f"soak gate: {run_id_of(run)} ended without run_end (killed, or the machine went down)"
    return None


def print_results(results: list[RuleResult], run_id: str, stream=None) -> None:
    stream = stream or sys.stdout
    failed = [r for r in results if not r.passed]
    skipped = [r for r in results if r.skipped]
    print(f"soak gate: {run_id}: {'FAILED' if failed else 'passed'} "
          f"({len(results) - len(failed) - len(skipped)}/{len(results)} rules pass"
          f"{f', {len(skipped)} skipped' if skipped else ''})", file=stream)
    for r in results:
        print(f"  {r.status.upper()[:4]}  {r.name}: {r.message}", file=stream)
        if not r.passed:
            for d in r.details[:5]:
                print(f"          {d}", file=stream)


# --- `soak run ... --gate POLICY` -------------------------------------------------

def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("gate (judge the run when it ends)")
    g.add_argument("--gate", metavar="POLICY", help="gate the finished run with this TOML policy "
                   f"(exit 1 if it fails); JUnit goes to RUN/{run_folder.GATE_JUNIT}")
    g.add_argument("--baseline", metavar="RUN", help="baseline run folder for the gate's tok/s regression rule")
    g.add_argument("--junit", metavar="FILE", help="also write the gate's JUnit here (CI test reports; the "
                   "suite name carries the run id, device and model)")
    g.add_argument("--expectations", metavar="FILE", help="baseline of expected failures and flakes (TOML, "
                   "see `soak gate --help`): they fail no rule and are labelled")
    g.add_argument("--rerun-unexpected", type=int, default=0, metavar="N",
                   help="re-run each unexpected cause up to N times; one that never comes back is a flake "
                   "(local target)")


def run_id_of(run: RunFolder) -> str:
    """The run id, even when events.jsonl cannot be read (then from the manifest or the folder name)."""
    try:
        return run.run_id
    except BadInput:
        return str(run.manifest.get("run_id") or run.path.name)


def run_labels(run: RunFolder) -> dict:
    """Device and model names for the JUnit suite name."""
    m = run.manifest
    device = (m.get("opencl") or {}).get("device") if isinstance(m.get("opencl"), dict) else None
    try:
        start = run.first("run_start") or {}
    except BadInput:  # events.jsonl unreadable: judged as run.complete, labelled from the manifest
        start = {}
    target = m.get("target") or start.get("target")
    phone = m.get("device") if isinstance(m.get("device"), dict) else None  # manifest `device`: adb targets
    if phone and (phone.get("model") or phone.get("serial")):
        device = " ".join(str(x) for x in (phone.get("model"), phone.get("serial")) if x)
    host = (m.get("host") or {}).get("hostname") if isinstance(m.get("host"), dict) else None
    model = m.get("model") if isinstance(m.get("model"), dict) else {}
    return {"device": device or (target if target and target != "local" else host),
            "model": model.get("name") or (Path(model["config_path"]).parent.name if model.get("config_path") else None)}


def judge(run_dir, policy: Policy, baseline=None, junit_path=None,
          gate_path=None, causes: list[dict] | None = None) -> tuple[bool, list[RuleResult], RunFolder]:
    """Evaluate, write gate.json (default RUN/gate.json: the gate's own output, the
    run's files are never rewritten) and JUnit; on bad input, write an error JUnit
    (when a path is known) and re-raise."""
    from soak.outputs.junit import write_error_junit, write_junit

    t0 = time.perf_counter()
    run = None
    try:
        run = open_run(run_dir)
        if baseline is not None:
            RunFolder(baseline)
        results, verdicts = evaluate(run, policy, baseline, causes)
    except BadInput as exc:
        path = junit_path or (Path(run_dir) / run_folder.GATE_JUNIT if Path(run_dir).is_dir() else None)
        if path is not None:
            try:
                write_error_junit(path, policy.name, run_id_of(run) if run else Path(run_dir).name,
                                  exc.message, exc.hint, time.perf_counter() - t0)
            except BadInput:
                pass
        raise
    write_gate(gate_path or run.path / run_folder.GATE, results, run, policy, verdicts, causes)
    if junit_path is not None:
        write_junit(results, junit_path, policy.name, run_id_of(run), time_s=time.perf_counter() - t0, **run_labels(run))
    return all(r.passed for r in results), results, run


def gate_run(run_dir, policy_path, baseline=None, junit_path=None,
             quiet: bool = False, causes: list[dict] | None = None) -> tuple[bool, list[RuleResult]]:
    """Gate a finished run; prints the rules to stderr (stdout stays for --json; nothing when
    quiet) and writes JUnit to RUN/gate-junit.xml (and junit_path).  causes: the run's causes
    labelled (soak.outputs.expectations.label_causes, soak.rerun)."""
    policy = (policy_path if isinstance(policy_path, Policy) else
              load_policy(policy_path) if policy_path else default_policy())
    passed, results, run = judge(run_dir, policy, baseline, Path(run_dir) / run_folder.GATE_JUNIT, causes=causes)
    if junit_path:  # `soak run --gate ... --junit FILE`: a copy where the CI looks for reports
        from soak.outputs.junit import write_junit

        write_junit(results, Path(junit_path), policy.name, run_id_of(run), **run_labels(run))
    if not quiet:
        print_results(results, run_id_of(run), stream=sys.stderr)
    return passed, results

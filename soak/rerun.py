"""Re-run an unexpected cause: does it come back? (`soak gate --rerun-unexpected N`, issue 26)

deqp-runner's rule: a failure not in the baseline is run again; one that does not fail again
is a flake.  Here each unexpected root cause of a run is re-run up to N times, stopping at
the first re-run that shows it again (then it is real); a cause that never comes back is
labelled `flake` (soak.outputs.expectations.label_causes).

How one re-run is made (`rerun_once`):
  - `soak repro`'s single-cause replay, when that module exists: `soak.repro` with
        replay_cause(run_dir: Path, cause: dict, out_dir: Path) -> {"recurred": bool, "run_dir": str,
                                                                    "how": str (optional)}
    (the reproducer of RUN/repro when `soak repro` made one, else the iteration replay below)
    (cause is the classifier's cause record, with `first_iteration` and `signature`);
  - else the iteration replay of `soak replay` (soak.loop.replay): the conversation holding
    the cause's first iteration, replayed on a fresh engine into a new run folder, judged
    like any run; the cause came back when the replay's classification has its key, or the
    fault events at that iteration have its signature.

The re-runs are run folders of their own, in RUN/reruns/ (soak.run_folder.RERUNS: the
gate's output, as gate.json is; `soak merge` and `soak history add` do not descend into a
run, so they are never taken for a night's runs); the run's own files are never rewritten.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from soak import run_folder
from soak.errors import BadInput
from soak.history import run_findings
from soak.outputs.expectations import Expectations, UNEXPECTED, cause_key, label_causes

SINGLE_CAUSE_REPLAY = "soak.repro"   # `soak repro`'s module, when it exists


def _single_cause_replayer():
    try:
        if importlib.util.find_spec(SINGLE_CAUSE_REPLAY) is None:
            return None
    except ModuleNotFoundError:
        return None
    return getattr(importlib.import_module(SINGLE_CAUSE_REPLAY), "replay_cause", None)


def rerun_once(run_dir: Path, cause: dict, out_dir: Path) -> dict:
    """One re-run of a cause: {"recurred": bool, "run_dir": the re-run's folder, "how": ...}."""
    single = _single_cause_replayer()
    if single is not None:
        got = single(run_dir, cause, out_dir)
        return {"recurred": bool(got.get("recurred")), "run_dir": str(got.get("run_dir")),
                "how": got.get("how") or "repro"}
    from soak.judges import judge_run
    from soak.loop.replay import plan_replay, run_replay
    from soak.outputs.replay_source import signatures_at

    iteration = cause.get("first_iteration")
    if not isinstance(iteration, int):
        raise BadInput(f"cause {cause_key(cause)} of {run_dir} names no iteration to replay",
                       "re-classify the run (soak classify RUN)")
    plan = plan_replay(run_dir, iteration, str(out_dir), quiet=True)
    result, _ = run_replay(plan)
    judge_run(result, True)
    replay_dir = Path(result.run_dir)
    keys = {r["key"] for r in run_findings(run_folder.read_json(replay_dir / run_folder.CLASSIFICATION) or {})}
    recurred = cause_key(cause) in keys or cause.get("signature") in signatures_at(replay_dir, iteration)
    return {"recurred": recurred, "run_dir": str(replay_dir), "how": "iteration replay"}


def rerun_unexpected(run_dir: str | Path, expectations: Expectations | None, attempts: int,
                     out_dir: str | Path | None = None, log=None) -> list[dict]:
    """The run's causes labelled (label_causes), each unexpected one re-run up to `attempts` times."""
    if attempts < 0:
        raise BadInput(f"--rerun-unexpected must be >= 0 (got {attempts})")
    run_dir = run_folder.require(run_dir)
    manifest = run_folder.read_json(run_dir / run_folder.MANIFEST) or {}
    classification = run_folder.read_json(run_dir / run_folder.CLASSIFICATION)
    if classification is None:
        from soak.catalog.classify import classify_run

        classification = classify_run(run_dir, write=False)
    first = label_causes(classification, manifest, expectations)
    reruns: dict[str, dict] = {}
    by_key = {cause_key(c): c for c in classification.get("causes") or [] if isinstance(c, dict)}
    out = Path(out_dir) if out_dir else run_dir / run_folder.RERUNS
    for rec in first:
        if rec["label"] != UNEXPECTED or attempts == 0:
            continue
        tries = []
        for k in range(attempts):
            got = rerun_once(run_dir, by_key[rec["key"]], out)
            tries.append(got)
            if log:
                log(f"re-run {k + 1}/{attempts} of {rec['key']}: "
                    f"{'came back' if got['recurred'] else 'did not come back'} ({got['run_dir']})")
            if got["recurred"]:
                break
        reruns[rec["key"]] = {"attempts": len(tries), "recurred": sum(t["recurred"] for t in tries),
                              "runs": [t["run_dir"] for t in tries], "how": tries[0]["how"]}
    return label_causes(classification, manifest, expectations, reruns)

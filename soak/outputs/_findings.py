"""Findings of a run (classification.json) joined with their fault events.

The classifier groups fault events under signatures; the gate, the bundle
and the report also need the events of each signature (iterations, log
spans).  Each fault event gets its signature from soak.catalog.signature, the
same function the classifier uses, so the two always agree.
"""

from __future__ import annotations

from soak import run_folder
from soak.analysis.loaded_run import RunFolder
from soak.fault_kinds import OWN_VERDICT_KINDS as DERIVED_KINDS  # findings from series, not from fault events
from soak.fault_kinds import fault_kind_of


def open_run(path) -> RunFolder:
    """The run folder for a judge that needs its findings: when
    classification.json is missing, the classifier's scan rides along the
    one pass over the events (RunFolder's companion), so the log is read once."""
    path = run_folder.require(path)
    if (path / run_folder.CLASSIFICATION).is_file():
        return RunFolder(path)
    from soak.catalog.classify import scan_reducer

    return RunFolder(path, companion=scan_reducer(path))


def classification(run: RunFolder) -> dict:
    """classification.json, or classify now (not written) when it is missing
    (from the scan fed by the run's pass when open_run made it)."""
    if run.classification is not None:
        return run.classification
    from soak.catalog.classify import classify_run

    return classify_run(run.path, write=False, run=run)


def fault_events(run: RunFolder) -> list[dict]:
    """Fault events plus interposer cl_call_error records (as kind cl_call_error): the faults
    of soak.fault_kinds.fault_kind_of, one per event."""
    out = []
    for e in run.notable:
        kind = fault_kind_of(e.get("event"), e)
        if kind is not None:
            out.append(e if e.get("kind") == kind else dict(e, kind=kind))
    return out


def event_signature(ev: dict) -> str:
    from soak.catalog.signature import signature

    sig_id, _text = signature(ev["kind"], ev.get("phase"), ev)
    return sig_id


def findings_with_events(run: RunFolder) -> list[dict]:
    """Each finding of the classification, with `occurrences`: its fault events in file order."""
    cls = classification(run)
    by_sig: dict[str, list[dict]] = {}
    for ev in fault_events(run):
        by_sig.setdefault(event_signature(ev), []).append(ev)
    out = []
    for f in cls.get("findings") or []:
        item = dict(f)
        item["occurrences"] = by_sig.pop(f.get("signature"), [])
        out.append(item)
    for sig, evs in by_sig.items():  # events the classification does not list (written before them)
        kind = evs[0]["kind"]
        out.append({"signature": sig, "signature_text": f"{kind}/{evs[0].get('phase') or '?'}", "kind": kind,
                    "phase": evs[0].get("phase"), "fault_id": None, "known": False, "title": kind,
                    "severity": "medium", "count": len(evs), "events": len(evs), "occurrences": evs,
                    "first_iteration": evs[0].get("iteration"), "last_iteration": evs[-1].get("iteration")})
    return out


def finding_label(f: dict) -> str:
    return f.get("fault_id") or f.get("signature") or "?"

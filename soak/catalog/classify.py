"""Classify a run folder (or a farm of them) against the fault catalog.

`classify_run(run_dir)` reads only the run folder (manifest.json,
events.jsonl, engine.log), groups identical failures into findings, matches
each once against the catalog, and writes classification.json.
`classify_many(dir_of_runs)` does every run below a folder and rolls the
findings up into one table of distinct faults.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from soak import fault_kinds
from soak.analysis.memory_verdict import memory_verdicts
from soak.analysis.loaded_run import RunFolder
from soak.catalog import _causal
from soak.catalog import _rawlog, _runscan
from soak.catalog._context import context_from_log, fill_from_events, load_context
from soak.catalog._finding import RunFacts
from soak.catalog._runscan import scan_run
from soak.catalog.loader import Catalog, default_catalog_dir, load_catalog
from soak.catalog.matcher import Matcher
from soak.catalog.schema import SEVERITY_RANK
from soak.catalog.signature import SIGNATURE_SCHEME
from soak.errors import BadInput, CatalogInvalid
from soak import run_folder
from soak.run_folder import write_json

FORMAT_VERSION = 1
OUTPUT_NAME = run_folder.CLASSIFICATION
FARM_OUTPUT_NAME = "farm-classification.json"



def is_run_dir(path: Path) -> bool:
    return run_folder.is_classifiable(path)


def resolve_catalog(catalog) -> Catalog:
    """A Catalog, a folder, or None (the default folder).  With None and no
    default folder, an empty catalog whose note says why: the run still gets
    signatures, and classification.json says that nothing was matched."""
    if isinstance(catalog, Catalog):
        return catalog
    if catalog is not None:
        return load_catalog(catalog)
    found = default_catalog_dir()
    if found is None:
        return Catalog(path=None, note="no fault catalog found (non-editable install?); pass --catalog DIR "
                                       "or set SOAK_CATALOG; only signatures were computed")
    return load_catalog(found)


def scan_reducer(run_dir):
    """The classifier's scan as a reducer for another pass over the run's
    events (soak.run_folder.reduce_lines, e.g. soak.analysis's RunFolder
    with `companion=`): made as classify_run makes its own; give that
    RunFolder to classify_run(run=...)."""
    return _runscan.scan_maker(load_context(Path(run_dir)).max_context).one


def is_scan(obj) -> bool:
    """Whether obj is a scan scan_reducer made (a pass's companion may be another reducer)."""
    return isinstance(obj, _runscan.Scan)


def classify_run(run_dir, catalog=None, write: bool = True, run: RunFolder | None = None) -> dict:
    """run: the run folder already opened with the classifier's scan as its companion
    (scan_reducer: one pass for verdicts and classification); else it is opened here.
    Memory findings are soak.analysis.memory_verdict's judgment of the run's events (the one
    the verdicts and the gate give), never a copy recorded in verdicts.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInput(f"run folder {run_dir} does not exist", hint="give a logs/<run-id>/ folder")
    if not is_run_dir(run_dir):
        raise BadInput(f"{run_dir} is not a run folder (no {run_folder.EVENTS} or {run_folder.ENGINE_LOG})",
                       hint="give a logs/<run-id>/ folder written by `soak run`")
    if run_folder.is_run_folder(run_dir):
        run_folder.require(run_dir)  # the schema of manifest.json
    cat = resolve_catalog(catalog)
    started = time.perf_counter()
    ctx = load_context(run_dir)
    memory = None
    if run_folder.is_run_folder(run_dir):
        if run is None or not is_scan(run.companion):
            run = RunFolder(run_dir, companion=_runscan.scan_maker(ctx.max_context).one)
        scan = run.companion
        memory = memory_verdicts(run)
    else:  # an engine.log alone: no memory samples
        scan = scan_run(run_dir, max_context=ctx.max_context)
    fill_from_events(ctx, scan)
    findings = scan.finish(ctx.backend, ctx.backend_actual, memory)
    engine_log = run_dir / run_folder.ENGINE_LOG
    facts = RunFacts(findings, scan.code_counts, ctx.max_context, engine_log if engine_log.is_file() else None)
    result = _classify(scan, findings, facts, ctx, cat, started, str(run_dir))
    if write:
        write_json(run_dir / OUTPUT_NAME, result)
    return result


def _classify(scan, findings, facts: RunFacts, ctx, cat: Catalog, started: float, where: str) -> dict:
    """Match the findings of one scan and group them into root causes."""
    _causal.mark_benign(findings, cat.entries, ctx.gpu_vendor, ctx.gpu_platform)
    matched = Matcher(cat.entries).match_run([f for f in findings if not f.benign], facts, ctx)
    out_findings = [_finding_json(f, *matched.get(f.signature, ([], []))) for f in findings]
    grouped = _causal.group(findings, {d["signature"]: d for d in out_findings}, scan.recorded, scan.loads)
    for d in out_findings:
        d["role"] = "benign" if d["confidence"] == "benign" else grouped["roles"].get(d["signature"], "root")
    out_findings.sort(key=lambda d: (SEVERITY_RANK[d["severity"]], -d["count"], d["first_seq"] if d["first_seq"] is not None else 0))
    causes = grouped["causes"]
    return {
        "version": FORMAT_VERSION,
        "signature_scheme": SIGNATURE_SCHEME,
        "run_id": ctx.run_id,
        "run_dir": where,
        "source": scan.source,
        "catalog": {"path": str(cat.path) if cat.path else None, "entries": len(cat.entries),
                    **({"note": cat.note} if cat.note else {})},
        "context": ctx.to_json(),
        "context_unknown": ctx.unknown(),
        "events_read": scan.events,
        "fault_events": scan.fault_events,
        # the root-cause table: one row per cause, its cascade folded beneath
        "causes": causes,
        "benign": grouped["benign"],
        "findings": out_findings,
        "faults": _rollup([(where, d) for d in out_findings]),
        "summary": {
            "findings": len(out_findings),
            "known": sum(1 for d in out_findings if d["known"]),
            "unknown": sum(1 for d in out_findings if not d["known"]),
            "near_misses": sum(len(d["near_misses"]) for d in out_findings),
            "worst_severity": out_findings[0]["severity"] if out_findings else None,
            "causes": len(causes),
            # a cause no catalog entry knows, and that no test injected
            "new": sum(1 for c in causes if not c["known"] and not c["injected"]),
            "benign": len(grouped["benign"]),
        },
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


def classify_log(path, catalog=None) -> dict:
    """Triage an engine log soak did not record (llm_demo / llm_bench stdout,
    a logcat dump, an adb bugreport): the same root-cause table, with the
    context the log told and what it did not.  Nothing is written."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path} is not a file", hint="give a log file, or a run folder (logs/<run-id>)")
    log = _rawlog.read(path)
    if not _rawlog.looks_like_engine_log(log):
        raise BadInput(f"{path}: no MNN engine line in {log.total_lines} lines ({log.format})",
                       hint="give llm_demo/llm_bench output, `adb logcat -d -v threadtime` or an `adb bugreport` text")
    cat = resolve_catalog(catalog)
    started = time.perf_counter()
    scan = _runscan.Scan()
    scan.source = log.format
    _runscan.scan_raw(scan, log)
    ctx = context_from_log(log.context, path.name)
    findings = scan.finish(ctx.backend, ctx.backend_actual, None)
    facts = RunFacts(findings, scan.code_counts, None, path)
    result = _classify(scan, findings, facts, ctx, cat, started, str(path))
    result["log"] = {"format": log.format, "lines": log.total_lines, "engine_lines": len(log.lines),
                     "crashes": len(log.crashes), "context_read": log.context,
                     "context_missing": log.context_missing}
    return result


def _finding_json(f, matches, near) -> dict:
    known = [m for m in matches if not m.entry.generic]
    primary = matches[0] if matches else None
    if f.benign:
        severity = "info"
    elif primary is not None:
        severity = min((m.entry.severity for m in matches), key=SEVERITY_RANK.__getitem__)
    else:
        severity = fault_kinds.severity(f.kind)
    d = {
        "signature": f.signature,
        "signature_text": f.signature_text,
        "kind": f.kind,
        "phase": f.phase,
        "fault_id": f.benign or (known[0].entry.id if known else None),
        "known": bool(known) or bool(f.benign),
        # confirmed: the best known entry's context all fits; context-unknown:
        # it fits as far as the manifest tells; signature-only: no known entry;
        # benign: a probe the catalog marks harmless on this vendor
        "confidence": ("benign" if f.benign else "signature-only" if not known else
                       "context-unknown" if known[0].unknown else "confirmed"),
        # an unknown crash with native frames: its signature names the frame, a generic entry does not
        "title": primary.entry.title if primary and (known or not f.frames) else f.signature_text,
        "severity": severity,
        "count": f.count,
        "events": f.events,
        "iterations_affected": len(set(f.iterations)) if len(f.iterations) < 1_000_000 else None,
        "first_iteration": f.ranges.get("iteration", (None, None))[0],
        "last_iteration": f.ranges.get("iteration", (None, None))[1],
        "injected": f.injected,
        "tags": dict(f.tags),
        "first_seq": f.first_seq,
        "last_seq": f.last_seq,
        "ranges": {k: list(v) for k, v in f.ranges.items()},
        "matches": [m.to_json() for m in matches],
        "near_misses": [m.to_json(near=True) for m in near],
        "sample": f.sample,
    }
    if f.code is not None:
        from soak.catalog._clcodes import code_name
        d["cl_code"] = {"code": f.code, "name": code_name(f.code)}
    if f.extra:
        d["figures"] = f.extra
    return d


def _rollup(items: list[tuple[str, dict]]) -> list[dict]:
    """(run folder, finding) pairs -> distinct faults: by known catalog id,
    else by signature; `runs` lists the run folders it was seen in."""
    table: dict[str, dict] = {}
    for run_key, d in items:
        if d.get("role") == "benign":  # a probe the catalog marks harmless: no fault
            continue
        key = d["fault_id"] or d["signature"]
        row = table.get(key)
        if row is None:
            row = table[key] = {
                "fault": key, "known": d["known"], "title": d["title"], "severity": d["severity"],
                "kind": d["kind"], "runs": [], "count": 0, "findings": [],
                "first_iteration": d["first_iteration"], "last_iteration": d["last_iteration"],
                "near_misses": sorted({n["id"] for n in d["near_misses"]}),
            }
        if run_key not in row["runs"]:
            row["runs"].append(run_key)
        row["count"] += d["count"]
        if d["signature"] not in row["findings"]:
            row["findings"].append(d["signature"])
        if SEVERITY_RANK[d["severity"]] < SEVERITY_RANK[row["severity"]]:
            row["severity"] = d["severity"]
        for k, pick in (("first_iteration", min), ("last_iteration", max)):
            vals = [v for v in (row[k], d[k]) if v is not None]
            row[k] = pick(vals) if vals else None
    return sorted(table.values(), key=lambda r: (SEVERITY_RANK[r["severity"]], -len(r["runs"]), -r["count"], r["fault"]))


def find_runs(directory: Path) -> list[Path]:
    """Run folders at or below `directory` (not descending into a run)."""
    directory = Path(directory)
    if is_run_dir(directory):
        return [directory]
    runs = []
    for root, dirs, _files in os.walk(directory):
        dirs.sort()
        for d in list(dirs):
            p = Path(root) / d
            if is_run_dir(p):
                runs.append(p)
                dirs.remove(d)
    return runs


def classify_many(runs_or_dir, catalog=None, write: bool = True) -> dict:
    """Classify every run (a folder of runs, or a list of run folders) and
    return {"runs": [...], "faults": one table of distinct faults}."""
    if isinstance(runs_or_dir, (str, os.PathLike)):
        base = Path(runs_or_dir)
        if not base.is_dir():
            raise BadInput(f"{base} does not exist or is not a folder", hint="give a folder of run folders")
        runs = find_runs(base)
    else:
        base = None
        runs = [Path(r) for r in runs_or_dir]
    if not runs:
        raise BadInput(f"no run folders found under {runs_or_dir}",
                       hint=f"a run folder holds {run_folder.EVENTS}, {run_folder.MANIFEST} or {run_folder.ENGINE_LOG}")
    cat = resolve_catalog(catalog)
    results = []
    for r in runs:
        results.append(classify_run(r, cat, write=write))
    items = [(res["run_dir"], d) for res in results for d in res["findings"]]
    farm = {
        "version": FORMAT_VERSION,
        "catalog": results[0]["catalog"],
        "runs": [{"run_id": r["run_id"], "run_dir": r["run_dir"], "findings": r["summary"]["findings"],
                  "known": r["summary"]["known"], "unknown": r["summary"]["unknown"],
                  "worst_severity": r["summary"]["worst_severity"],
                  "context": {k: r["context"].get(k) for k in ("model_params_human", "kv_bytes_per_token", "model_family", "backend",
                                                                "backend_actual", "gpu_model", "driver_version",
                                                                "mnn_version", "os")}}
                 for r in results],
        "faults": _rollup(items),
    }
    if write and base is not None and not is_run_dir(base):
        write_json(base / FARM_OUTPUT_NAME, farm)
    farm["results"] = results
    return farm


__all__ = ["classify_run", "classify_many", "find_runs", "is_run_dir", "resolve_catalog", "CatalogInvalid"]

"""Causal grouping: a run's findings as root causes, each with its cascade.

Every fault record has a place: its *bucket* (the iteration, with the init
or load that preceded it) and, inside the bucket, an order key (see
_finding.order_key: the interposer's failed call, then MNN's log lines by
engine.log offset, then the call's end, then the output checks).

An *episode* is a run of consecutive failing buckets: a clean iteration in
between ends it.  The first record of an episode is its root cause (an
injected interposer record of the first bucket is preferred: it is the
cause by construction); everything else in the episode is its cascade.

State-dependent faults (soak.fault_kinds `follows_state`: the oracle's
wrong_output and nonfinite_logits, forward_stopped) are effects of what a GPU
error left behind: a setArg that failed once leaves its kernel skipped on
every later step (alibaba/MNN#4653), and the iterations in between look
clean (or were not checked: `--oracle-every`).  Such a record joins the
episode of the last GPU error (cl_error, cl_call_error) before it, however
many clean iterations lie between, unless the model was loaded again since
(a reload or a worker restart: `resets`, the buckets of the load events).

A row of the table is one root cause: roots with the same catalog id (or,
unmatched, the same signature less its info tag) in the same phase are one
row, their info tags and kernels listed inside.  The cascade is counted by
kind, code and tag.  Findings with no place (memory growth and the other
faults the classifier derives over the whole run) are rows of their own
after the placed ones.

Benign probes (catalog entries with `benign:`) are set aside first: an
engine asking a driver for a parameter it does not have is no fault.
"""

from __future__ import annotations

from soak.analysis.streaming import Intervals
from soak.fault_kinds import GPU_ERROR_KINDS, STATE_KINDS
from soak.catalog._clcodes import code_name
from soak.catalog._finding import Finding
from soak.catalog.schema import SEVERITY_RANK, Entry


def mark_benign(findings: list[Finding], entries: list[Entry], vendor: str | None, platform: str | None) -> None:
    probes = [(e, p) for e in entries for p in e.benign]
    if not probes:
        return
    for f in findings:
        if f.kind != "cl_call_error" or f.injected:
            continue
        for e, p in probes:
            if p.fits(f.api, f.code, f.param_name, vendor, platform):
                f.benign = e.id
                break


def row_key(d: dict) -> tuple:
    """Roots that are one row: same known catalog id, else the same
    signature less its tag, in the same phase."""
    if d["known"]:
        ident = d["fault_id"]
    elif d["kind"] == "cl_error":
        ident = f"cl_error {(d.get('cl_code') or {}).get('name')}"
    else:
        ident = d["signature"]
    return (ident, d["phase"])


def _cascade_tag(f: Finding) -> str | None:
    if f.kind == "cl_error":
        return f.info
    if f.kind == "cl_call_error":
        return f.api
    if f.kind == "error_line":
        return f.pattern
    if f.kind == "crash":
        return f.signal or (f"exit {f.exit_code}" if f.exit_code is not None else None)
    if f.kind == "status_error":
        return f.status_name
    if f.kind == "bad_output":
        return "+".join(sorted(f.symptoms)) or None
    return None


def episodes(findings: list[Finding], iterations, resets=()) -> list[list[tuple]]:
    """[(bucket, order key, finding, count), ...] per episode, in order of their first record.
    `iterations`: the iterations the run recorded (Intervals, or numbers); `resets`: the buckets
    where the model was loaded (again): a GPU error's state ends there."""
    its = iterations if isinstance(iterations, Intervals) else Intervals(iterations)
    loads = Intervals(resets)
    records = []
    for f in findings:
        if f.benign or f.minor:
            continue
        for b, (key, n) in f.where.items():
            records.append((b, key, f, n))
    records.sort(key=lambda r: (r[0], r[1]))
    out: list[list[tuple]] = []
    cur: list | None = None
    gpu: tuple[list, int] | None = None     # the episode of the last GPU error, and that error's bucket
    prev = None
    for rec in records:
        b, f = rec[0], rec[2]
        # a recorded iteration strictly between the last failing bucket and this one was clean
        clean_between = prev is not None and b > prev + 1 and its.any_between(prev + 1, b - 1)
        if f.kind in STATE_KINDS and gpu is not None and not loads.any_between(gpu[1] + 1, b):
            cur = gpu[0]                     # what the GPU error left behind: its cascade
        elif cur is None or clean_between:
            cur = []
            out.append(cur)
        cur.append(rec)
        if f.kind in GPU_ERROR_KINDS:
            gpu = (cur, b)
        prev = b
    return out


def group(findings: list[Finding], by_sig: dict[str, dict], iterations, resets=()) -> dict:
    """The root-cause table: {"causes": [row, ...], "benign": [...]}.
    `by_sig` maps a finding's signature to its classified JSON (fault_id,
    severity, matches, near misses); `resets`: the buckets of the model's loads."""
    rows: dict[tuple, dict] = {}
    order: list[tuple] = []
    role: dict[str, set] = {}

    def row_for(root: Finding) -> dict:
        d = by_sig[root.signature]
        k = row_key(d)
        row = rows.get(k)
        if row is None:
            row = rows[k] = {
                "fault_id": d["fault_id"], "known": d["known"], "title": d["title"],
                "cause_severity": d["severity"], "severity": d["severity"], "kind": d["kind"],
                "phase": d["phase"], "injected": False, "confidence": d["confidence"],
                "signature": d["signature"], "signature_text": d["signature_text"],
                "findings": [], "kinds": [], "tags": {}, "count": 0, "episodes": 0,
                "first_iteration": None, "last_iteration": None,
                "cascade": {}, "cascade_count": 0, "near_misses": [], "why": _why(d),
                "_first": None,
            }
            order.append(k)
        return row

    for ep in episodes(findings, iterations, resets):
        first_bucket = ep[0][0]
        injected = [r for r in ep if r[0] == first_bucket and r[2].injected]
        root = (injected or ep)[0][2]
        row = row_for(root)
        same = row_key(by_sig[root.signature])
        row["episodes"] += 1
        row["injected"] = row["injected"] or root.injected
        if row["_first"] is None:
            row["_first"] = (first_bucket, ep[0][1])
        lo, hi = ep[0][0], ep[-1][0]
        row["first_iteration"] = lo if row["first_iteration"] is None else min(row["first_iteration"], lo)
        row["last_iteration"] = hi if row["last_iteration"] is None else max(row["last_iteration"], hi)
        for b, _key, f, n in ep:
            d = by_sig[f.signature]
            if f is root or row_key(d) == same:
                role.setdefault(f.signature, set()).add("root")
                if d["signature"] not in row["findings"]:
                    row["findings"].append(d["signature"])
                if f.kind not in row["kinds"]:
                    row["kinds"].append(f.kind)
                if SEVERITY_RANK[d["severity"]] < SEVERITY_RANK[row["severity"]]:
                    row["severity"] = d["severity"]
                row["count"] += n
                _merge_near(row, d)
                continue
            role.setdefault(f.signature, set()).add("cascade")
            ck = (f.kind, f.code, _cascade_tag(f))
            c = row["cascade"].get(ck)
            if c is None:
                c = row["cascade"][ck] = {"kind": f.kind, "code": f.code,
                                          "name": code_name(f.code) if f.code is not None else None,
                                          "tag": ck[2], "phase": f.phase, "count": 0,
                                          "fault_id": d["fault_id"], "severity": d["severity"], "findings": []}
            c["count"] += n
            row["cascade_count"] += n
            if d["signature"] not in c["findings"]:
                c["findings"].append(d["signature"])
            if SEVERITY_RANK[d["severity"]] < SEVERITY_RANK[row["severity"]]:
                row["severity"] = d["severity"]
    # root tags: the tags of the findings that are this row
    for f in findings:
        if f.benign or "root" not in role.get(f.signature, ()):
            continue
        row = rows[row_key(by_sig[f.signature])]
        for tag, n in f.tags.items():
            row["tags"][tag] = row["tags"].get(tag, 0) + n
        if f.kind == "cl_error" and not f.tags and f.info:
            row["tags"][f.info] = row["tags"].get(f.info, 0) + f.count
    # warnings (a row each, at their place) and findings with no place (rows
    # of their own, after the placed ones)
    alone = [f for f in findings if not f.benign and (f.minor or not f.where)]
    for f in alone:
        row = row_for(f)
        if f.where:
            b = min(f.where)
            first = (b, f.where[b][0])
            row["_first"] = first if row["_first"] is None else min(row["_first"], first)
        d = by_sig[f.signature]
        role.setdefault(f.signature, set()).add("root")
        if d["signature"] not in row["findings"]:
            row["findings"].append(d["signature"])
        if f.kind not in row["kinds"]:
            row["kinds"].append(f.kind)
        for tag, n in f.tags.items():
            row["tags"][tag] = row["tags"].get(tag, 0) + n
        row["count"] += f.count
        row["episodes"] += 1
        row["first_iteration"] = d["first_iteration"]
        row["last_iteration"] = d["last_iteration"]
        _merge_near(row, d)
    placed = sorted((k for k in order if rows[k]["_first"] is not None), key=lambda k: rows[k]["_first"])
    rest = sorted((k for k in order if rows[k]["_first"] is None),
                  key=lambda k: (SEVERITY_RANK[rows[k]["severity"]], -rows[k]["count"]))
    causes = []
    for n, k in enumerate(placed + rest):
        row = rows[k]
        first = row.pop("_first")
        row["rank"] = n + 1
        row["position"] = list(first[:1]) + [list(first[1])] if first else None
        row["cascade"] = sorted(row["cascade"].values(), key=lambda c: (-c["count"], c["kind"], str(c["tag"])))
        row["tags"] = dict(sorted(row["tags"].items(), key=lambda kv: -kv[1]))
        causes.append(row)
    benign = [{"signature": f.signature, "signature_text": f.signature_text, "entry": f.benign,
               "api": f.api, "param_name": f.param_name, "code": f.code, "count": f.count}
              for f in findings if f.benign]
    return {"causes": causes, "benign": benign,
            "roles": {sig: ("root" if "root" in r else "cascade") for sig, r in role.items()}}


def _why(d: dict) -> str:
    if d["matches"]:
        return "; ".join(d["matches"][0]["why"][:3])
    return d["signature_text"]


def _merge_near(row: dict, d: dict) -> None:
    have = {n["id"] for n in row["near_misses"]}
    for nm in d["near_misses"]:
        if nm["id"] not in have:
            row["near_misses"].append(nm)
            have.add(nm["id"])

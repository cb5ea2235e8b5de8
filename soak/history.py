"""Night-to-night history of findings, in one SQLite file (issue 16).

    add_runs(db, [run folders])      store each run's context and findings (idempotent)
    findings(db)                     every finding with first/last seen, counts, devices
    new_findings(db, window_h)       what is new in the latest night
    since_build(db, key)             which MNN build a finding first appeared in
    by_driver(db, key)               on which GPU drivers it appears, and where it never did
    lab(db, fixed_after=N)           the lab's view of every cause (issue 26): status, nights seen
                                     out of nights run, regression and fix ranges, repro, matrix

A finding is one of the classifier's root causes (its cascade folded in; benign
probes left out); its key is its catalog id when the classifier matched one, else
its signature (`sig-...`).  The file needs no server; parallel CI jobs may add to it
at the same time: every write is one `BEGIN IMMEDIATE` transaction, WAL mode,
with a busy timeout, so writers queue instead of failing.  The schema version is
SQLite's `user_version`; `_MIGRATIONS` upgrades an older file in place.

This module reads run folders (manifest.json, classification.json, the gate's
gate.json labels, repro/repro.json) and writes only the database: it is an
output of the analysis, never an input to it.

The lab's words (issue 26).  A *night* is the date of a run's start less 12 h
(a night that crosses midnight is one night).  A *bench* is what a phone runs
night after night: device, model, backend and workload (the engine and the
length of its turns); a *configuration* is a bench with the two things that
change under it, the MNN build and the GPU driver.  Per cause:

    nights seen / nights run   on the configurations that ever showed it (reliability)
    regression range           on a bench, the run before its first occurrence there (last good)
                               and that occurrence (first bad), when build or driver differ
    fix range                  on a bench, its last occurrence (last bad) and the clean run after
    status                     fixed        >= fixed_after clean nights on the benches that had it,
                                            after its last night
                               flaky        seen on >= 2 nights, and seen on < flaky_below of the
                                            nights its configurations ran, or a gate labelled it
                                            `flake` (soak gate --rerun-unexpected)
                               not seen lately  absent from the latest night, without enough
                                            clean nights to call it fixed (its bench may not
                                            have run at all: a workload nobody runs any more)
                               new          first seen in the latest night
                               regressed    seen lately, with a regression range
                               open         seen lately, no clean run before it on its benches
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from soak import errors, run_folder

DEFAULT_DB = Path("logs") / "history.sqlite"
BUSY_TIMEOUT_S = 60.0

# Each entry upgrades the schema from version i to i + 1.  Never edit a released step:
# add one.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        run_id        TEXT PRIMARY KEY,
        started       TEXT,            -- ISO-8601 UTC, from the manifest
        ended         TEXT,
        added         TEXT NOT NULL,   -- when `soak history add` stored it
        host          TEXT,            -- the machine soak ran on
        adb_server    TEXT,            -- host:port of the adb server (remote phones), or NULL
        serial        TEXT,            -- phone serial, or NULL on a local target
        device        TEXT,            -- phone model or host name
        gpu           TEXT,            -- OpenCL device name
        driver        TEXT,            -- OpenCL driver version
        mnn_version   TEXT,
        model         TEXT,            -- model family and size, e.g. "qwen2 0.5B"
        model_params  INTEGER,
        backend       TEXT,
        end_reason    TEXT,
        iterations    INTEGER
    );
    CREATE TABLE findings (
        key       TEXT PRIMARY KEY,    -- catalog id, or signature when unknown
        title     TEXT,
        severity  TEXT,
        known     INTEGER NOT NULL
    );
    CREATE TABLE occurrences (
        key             TEXT NOT NULL REFERENCES findings(key),
        run_id          TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        count           INTEGER NOT NULL,
        first_iteration INTEGER,
        last_iteration  INTEGER,
        PRIMARY KEY (key, run_id)
    );
    CREATE INDEX occurrences_run ON occurrences(run_id);
    """,
    # 1 -> 2 (issue 26): nights, benches, the run folder, the gate's labels, repros
    """
    ALTER TABLE runs ADD COLUMN night TEXT;
    UPDATE runs SET night = date(coalesce(started, added), '-12 hours');
    ALTER TABLE runs ADD COLUMN workload TEXT;
    ALTER TABLE runs ADD COLUMN run_dir TEXT;
    CREATE INDEX runs_night ON runs(night);
    ALTER TABLE occurrences ADD COLUMN label TEXT;
    CREATE TABLE repros (
        key         TEXT NOT NULL,
        run_id      TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        path        TEXT,
        attempts    INTEGER,
        reproduced  INTEGER,
        command     TEXT,
        PRIMARY KEY (key, run_id)
    );
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


class HistoryError(errors.BadInput):
    pass


@dataclass
class Added:
    run_id: str
    findings: int
    replaced: bool


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating or upgrading) the history database at path."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise HistoryError(f"history database {path} is not a file", "pass --db FILE.sqlite")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: a commit does not wait for fsync (the checkpoint does); a power
        # cut may lose the last commits but never corrupts the file.  1,000 runs add in 1 s, not 8.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        raise HistoryError(f"history database {path} is unreadable: {exc}",
                           "pass another --db, or move the damaged file away") from None
    except OSError as exc:
        raise HistoryError(f"cannot open history database {path}: {exc.strerror or exc}",
                           "pass a writable --db path") from None
    return conn


@contextmanager
def _write(conn: sqlite3.Connection):
    conn.execute("BEGIN IMMEDIATE")  # take the write lock now: parallel writers queue here
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    with _write(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryError(f"history database {path} has schema {version}, newer than this soak's "
                               f"{SCHEMA_VERSION}", "upgrade soak, or pass another --db")
        for step in range(version, SCHEMA_VERSION):
            for statement in filter(str.strip, _MIGRATIONS[step].split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")


# -- reading a run folder ------------------------------------------------------

def _text(value) -> str | None:
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def run_context(manifest: dict) -> dict:
    """The columns of `runs` from a manifest (every field optional)."""
    def get(*path):
        cur = manifest
        for p in path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        return cur

    device = get("device") or {}
    if not device and isinstance(get("host"), dict) and get("host", "kind") == "adb":
        device = get("host")  # runs from before the manifest had `device`: the phone was `host`
    opencl = get("opencl") or {}
    model = get("model") or {}
    params = model.get("params") if isinstance(model, dict) else None
    family = model.get("family") if isinstance(model, dict) else None
    size = model.get("size_label") if isinstance(model, dict) else None
    if not size and isinstance(params, (int, float)) and params:
        size = f"{params / 1e9:.1f}B" if params >= 1e8 else f"{params / 1e6:.0f}M"
    return {
        "started": _text(get("started")), "ended": _text(get("ended")),
        "host": _text(get("host", "hostname")),
        "adb_server": _text(device.get("adb_server")) if isinstance(device, dict) else None,
        "serial": _text(device.get("serial")) if isinstance(device, dict) else None,
        "device": _text((device.get("model") if isinstance(device, dict) else None) or get("host", "hostname")),
        "gpu": _text((opencl.get("device") if isinstance(opencl, dict) else None)
                     or (device.get("gpu") if isinstance(device, dict) else None)),
        "driver": _text((opencl.get("driver_version") if isinstance(opencl, dict) else None)
                        or (device.get("gpu_driver") if isinstance(device, dict) else None)),
        "mnn_version": _text(get("mnn_version")),
        "model": " ".join(x for x in (_text(family), size) if x) or None,
        "model_params": int(params) if isinstance(params, (int, float)) else None,
        "backend": _text(get("backend_actual") or get("backend")),
        "workload": workload_of(get("config")),
    }


def workload_of(config) -> str | None:
    """What a bench runs, from the manifest's config: the engine and the length of its turns.
    The seed and the fault plan are not the workload (a night's prompts differ; the plan is
    the test engine's way of making faults)."""
    if not isinstance(config, dict):
        return None
    parts = [str(config["engine"]) if config.get("engine") else None,
             f"{config['max_new_tokens']} tok" if isinstance(config.get("max_new_tokens"), int) else None,
             f"{config['max_turns']} turns" if isinstance(config.get("max_turns"), int) else None,
             f"ctx {config['context_tokens']}" if isinstance(config.get("context_tokens"), int) else None,
             "script" if config.get("script") else None]
    return " ".join(p for p in parts if p) or None


def night_of(when: str | None) -> str | None:
    """The night of a run: the date of its start less 12 hours (UTC)."""
    if not when:
        return None
    return (_parse_time(when).astimezone(timezone.utc) - timedelta(hours=12)).date().isoformat()


def run_findings(classification: dict) -> list[dict]:
    """One row per finding key: catalog id when known, else the signature.

    The classifier's root causes are what a night is about: their cascades fold into
    them, and probes it set aside as benign are not findings at all.  A classification
    written before root causes existed gives its findings instead."""
    causes = classification.get("causes")
    items = causes if isinstance(causes, list) else [
        f for f in classification.get("findings") or [] if isinstance(f, dict) and f.get("role") != "benign"]
    rows: dict[str, dict] = {}
    for f in items:
        if not isinstance(f, dict):
            continue
        key = f.get("fault_id") if f.get("fault_id") else f.get("signature")
        if not isinstance(key, str) or not key:
            continue
        count = f.get("count") if isinstance(f.get("count"), int) else 1
        first, last = f.get("first_iteration"), f.get("last_iteration")
        row = rows.get(key)
        if row is None:
            rows[key] = {"key": key, "title": _text(f.get("title") or f.get("signature_text")),
                         "severity": _text(f.get("severity")), "known": bool(f.get("known")),
                         "kind": _text(f.get("kind")),
                         "count": count, "first_iteration": first if isinstance(first, int) else None,
                         "last_iteration": last if isinstance(last, int) else None}
        else:
            row["count"] += count
            for k, pick in (("first_iteration", min), ("last_iteration", max)):
                v = f.get(k)
                if isinstance(v, int):
                    row[k] = v if row[k] is None else pick(row[k], v)
    return list(rows.values())


def add_runs(conn: sqlite3.Connection, run_dirs: list[Path]) -> list[Added]:
    """Store runs; a run added again replaces its earlier rows (one transaction each).
    A run without classification.json (killed before its end) is classified in memory."""
    added = []
    for run_dir in run_dirs:
        run_folder.require(run_dir)  # exit 3 on a folder that is not one, or of a newer schema
        manifest = run_folder.read_manifest(run_dir) or {}
        classification = run_folder.read_json(run_dir / run_folder.CLASSIFICATION)
        if classification is None:  # killed before its end-of-run classification: classify now, read-only
            from soak.catalog.classify import classify_run

            classification = classify_run(run_dir, write=False)
        summary = run_folder.read_json(run_dir / run_folder.SUMMARY) or {}  # a killed run has none
        added.append(add_run(conn, run_dir, manifest, classification, summary))
    return added


def gate_labels(run_dir: Path) -> dict[str, str]:
    """{cause key: label} the gate gave the run's causes (gate.json `causes`: expected, flake,
    unexpected); empty when it was not gated with expectations."""
    try:
        gate = run_folder.read_json(Path(run_dir) / run_folder.GATE) or {}
    except errors.BadInput:
        return {}
    causes = gate.get("causes") if isinstance(gate, dict) else None
    return {c["key"]: c["label"] for c in causes or []
            if isinstance(c, dict) and isinstance(c.get("key"), str) and isinstance(c.get("label"), str)}


def read_repro(run_dir: Path) -> list[dict]:
    """The repro metadata of a run folder: RUN/repro/repro.json, written by `soak repro`:

        {"schema": 1,
         "causes": [{"key": "<catalog id or sig-...>",  the cause (as the history keys it)
                     "attempts": 5,                     replays tried
                     "reproduced": 4,                   replays that showed the cause again
                     "path": "repro/<something>",       the reproducer, relative to the run folder
                     "command": "soak repro ..."}]}     how to run it again (optional)

    Entries that are not of this shape are left out; none when the folder has no repro."""
    path = Path(run_dir) / run_folder.REPRO / run_folder.REPRO_META
    if not path.is_file():
        return []
    try:
        meta = run_folder.read_json(path) or {}
    except errors.BadInput:
        return []
    out = []
    for c in meta.get("causes") or [] if isinstance(meta, dict) else []:
        if not isinstance(c, dict) or not isinstance(c.get("key"), str) or not c["key"]:
            continue
        n = lambda v: v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None  # noqa: E731
        out.append({"key": c["key"], "attempts": n(c.get("attempts")), "reproduced": n(c.get("reproduced")),
                    "path": _text(c.get("path")), "command": _text(c.get("command"))})
    return out


def add_run(conn: sqlite3.Connection, run_dir: Path, manifest: dict, classification: dict,
            summary: dict) -> Added:
    """Store one run from its already-read files (`soak merge` reads them once for both)."""
    run_id = _text(manifest.get("run_id")) or Path(run_dir).name
    context = run_context(manifest)
    rows = run_findings(classification)
    labels = gate_labels(run_dir)
    repros = read_repro(run_dir)
    added = _now()
    context["night"] = night_of(context["started"] or added)
    context["run_dir"] = str(Path(run_dir).resolve())
    with _write(conn):
        replaced = conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0
        conn.execute(
            "INSERT INTO runs (run_id, added, end_reason, iterations, " + ", ".join(context) + ") "
            "VALUES (?, ?, ?, ?, " + ", ".join("?" * len(context)) + ")",
            (run_id, added, _text(summary.get("end_reason")),
             summary.get("iterations") if isinstance(summary.get("iterations"), int) else None,
             *context.values()))
        for r in repros:
            conn.execute("INSERT OR REPLACE INTO repros VALUES (?, ?, ?, ?, ?, ?)",
                         (r["key"], run_id, r["path"], r["attempts"], r["reproduced"], r["command"]))
        for row in rows:
            conn.execute(
                "INSERT INTO findings (key, title, severity, known) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET title = coalesce(excluded.title, title), "
                "severity = coalesce(excluded.severity, severity), known = max(known, excluded.known)",
                (row["key"], row["title"], row["severity"], int(row["known"])))
            conn.execute("INSERT INTO occurrences (key, run_id, count, first_iteration, last_iteration, label) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (row["key"], run_id, row["count"], row["first_iteration"], row["last_iteration"],
                          labels.get(row["key"])))
    return Added(run_id, len(rows), replaced)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- questions -------------------------------------------------------------------

_WHEN = "coalesce(r.started, r.added)"


def findings(conn: sqlite3.Connection) -> list[dict]:
    """Every finding: first/last seen, runs, total count, devices, drivers, MNN versions."""
    rows = conn.execute(f"""
        SELECT f.key, f.title, f.severity, f.known,
               min({_WHEN}) AS first_seen, max({_WHEN}) AS last_seen,
               count(DISTINCT o.run_id) AS runs, sum(o.count) AS count,
               group_concat(DISTINCT r.device) AS devices,
               group_concat(DISTINCT r.driver) AS drivers,
               group_concat(DISTINCT r.mnn_version) AS mnn_versions,
               group_concat(DISTINCT o.run_id) AS run_ids
        FROM findings f JOIN occurrences o ON o.key = f.key JOIN runs r ON r.run_id = o.run_id
        GROUP BY f.key ORDER BY first_seen, f.key""").fetchall()
    return [_row(r) for r in rows]


def _row(r: sqlite3.Row) -> dict:
    d = dict(r)
    for k in ("devices", "drivers", "mnn_versions", "run_ids"):
        if k in d:
            d[k] = sorted(x for x in (d[k] or "").split(",") if x)
    if "known" in d:
        d["known"] = bool(d["known"])
    return d


def latest_night(conn: sqlite3.Connection, window_h: float) -> tuple[str | None, str | None]:
    """(start, end) of the latest night: the window_h hours up to the newest run."""
    newest = conn.execute(f"SELECT max({_WHEN}) FROM runs r").fetchone()[0]
    if newest is None:
        return None, None
    end = _parse_time(newest)
    return (end - timedelta(hours=window_h)).isoformat(timespec="seconds"), newest


def new_findings(conn: sqlite3.Connection, window_h: float = 24.0) -> dict:
    """Findings seen in the latest night and in no run before it."""
    start, end = latest_night(conn, window_h)
    if start is None:
        return {"night_start": None, "night_end": None, "runs": 0, "new": []}
    tonight = f"{_WHEN} > ?"
    runs = conn.execute(f"SELECT count(*) FROM runs r WHERE {tonight}", (start,)).fetchone()[0]
    rows = conn.execute(f"""
        SELECT f.key, f.title, f.severity, f.known, sum(o.count) AS count,
               count(DISTINCT o.run_id) AS runs,
               group_concat(DISTINCT r.device) AS devices, group_concat(DISTINCT o.run_id) AS run_ids
        FROM findings f JOIN occurrences o ON o.key = f.key JOIN runs r ON r.run_id = o.run_id
        WHERE {tonight}
          AND NOT EXISTS (SELECT 1 FROM occurrences o2 JOIN runs r2 ON r2.run_id = o2.run_id
                          WHERE o2.key = f.key AND coalesce(r2.started, r2.added) <= ?)
        GROUP BY f.key ORDER BY f.key""", (start, start)).fetchall()
    return {"night_start": start, "night_end": end, "runs": runs, "new": [_row(r) for r in rows]}


def _require_finding(conn: sqlite3.Connection, key: str) -> None:
    if conn.execute("SELECT 1 FROM findings WHERE key = ?", (key,)).fetchone() is None:
        raise HistoryError(f"no finding {key!r} in the history",
                           "`soak history` lists the keys (catalog ids and sig-... signatures)")


def since_build(conn: sqlite3.Connection, key: str) -> dict:
    """Per MNN version, in the order versions were first run: runs, runs with the finding.
    `first_bad` is the earliest version showing it; `last_good` the latest version before it
    that ran without it."""
    _require_finding(conn, key)
    rows = conn.execute(f"""
        SELECT coalesce(r.mnn_version, '?') AS mnn_version, min({_WHEN}) AS first_run,
               count(*) AS runs,
               sum(EXISTS (SELECT 1 FROM occurrences o WHERE o.run_id = r.run_id AND o.key = ?)) AS with_finding
        FROM runs r GROUP BY coalesce(r.mnn_version, '?') ORDER BY first_run""", (key,)).fetchall()
    versions = [dict(r) for r in rows]
    first_bad = next((v["mnn_version"] for v in versions if v["with_finding"]), None)
    last_good = None
    for v in versions:
        if v["mnn_version"] == first_bad:
            break
        if v["with_finding"] == 0:
            last_good = v["mnn_version"]
    return {"key": key, "first_bad": first_bad, "last_good": last_good, "versions": versions}


def by_driver(conn: sqlite3.Connection, key: str) -> dict:
    """Per (GPU, driver): runs and runs with the finding."""
    _require_finding(conn, key)
    rows = conn.execute("""
        SELECT coalesce(r.gpu, '?') AS gpu, coalesce(r.driver, '?') AS driver, count(*) AS runs,
               sum(EXISTS (SELECT 1 FROM occurrences o WHERE o.run_id = r.run_id AND o.key = ?)) AS with_finding,
               group_concat(DISTINCT r.device) AS devices
        FROM runs r GROUP BY coalesce(r.gpu, '?'), coalesce(r.driver, '?')
        ORDER BY with_finding DESC, gpu, driver""", (key,)).fetchall()
    drivers = [_row(r) for r in rows]
    return {"key": key, "affected": [d for d in drivers if d["with_finding"]],
            "clean": [d for d in drivers if not d["with_finding"]]}


def _parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return datetime.fromtimestamp(time.time(), timezone.utc)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


# -- the lab's view (issue 26) ------------------------------------------------------

FIXED_AFTER = 7          # clean nights on the benches that had a cause before it is `fixed`
FLAKY_BELOW = 0.8        # seen on fewer than this share of its configurations' nights: flaky
STATUSES = ("new", "regressed", "flaky", "open", "not seen lately", "fixed")


def _bench(r) -> tuple:
    return (r["device"] or "?", r["model"] or "?", r["backend"] or "?", r["workload"] or "?")


def _version(r) -> dict:
    return {"night": r["night"], "run_id": r["run_id"], "build": r["mnn_version"], "driver": r["driver"]}


def _range(before, after) -> dict | None:
    """What changed between two runs of one bench: {changed: [build|driver], from, to} or None."""
    changed = [k for k in ("build", "driver") if before[k] != after[k]]
    return {"changed": changed, "from": before, "to": after} if changed else None


def lab(conn: sqlite3.Connection, fixed_after: int = FIXED_AFTER, flaky_below: float = FLAKY_BELOW,
        each=None) -> dict:
    """Every cause as the lab sees it (the module docstring defines the words), and the
    device x driver x model x backend matrix.  Reads each table once, the occurrences one
    cause at a time: memory is the runs plus what is kept of each cause.

    each(cause, bench_nights) -> dict: called with each cause as it is made (the dashboard
    writes its page then); what it returns is kept in `causes` (default: the whole cause).
    bench_nights is {bench tuple: the nights it ran}."""
    if fixed_after < 1:
        raise HistoryError(f"fixed_after must be at least 1 night (got {fixed_after})")
    runs: dict[str, sqlite3.Row] = {}
    bench_runs: dict[tuple, list] = {}
    config_nights: dict[tuple, set] = {}
    bench_nights: dict[tuple, set] = {}
    runs_per_night: dict[str, int] = {}
    matrix: dict[tuple, dict] = {}
    for r in conn.execute("SELECT run_id, night, coalesce(started, added) AS t, device, gpu, driver, model, "
                          "backend, workload, mnn_version, run_dir FROM runs ORDER BY night, t, run_id"):
        if r["night"] is None:
            continue
        runs[r["run_id"]] = r
        b = _bench(r)
        bench_runs.setdefault(b, []).append(r)
        bench_nights.setdefault(b, set()).add(r["night"])
        config_nights.setdefault(b + (r["mnn_version"], r["driver"]), set()).add(r["night"])
        runs_per_night[r["night"]] = runs_per_night.get(r["night"], 0) + 1
        m = matrix.setdefault((r["device"] or "?", r["driver"] or "?", r["model"] or "?", r["backend"] or "?"),
                              {"runs": 0, "nights": set(), "causes": set()})
        m["runs"] += 1
        m["nights"].add(r["night"])
    nights = sorted(runs_per_night)
    latest = nights[-1] if nights else None
    index = {r["run_id"]: i for b in bench_runs.values() for i, r in enumerate(b)}

    repros: dict[str, list] = {}
    for p in conn.execute("SELECT p.*, r.run_dir FROM repros p JOIN runs r ON r.run_id = p.run_id "
                          "ORDER BY p.run_id"):
        repros.setdefault(p["key"], []).append(dict(p))
    causes = []
    findings = {f["key"]: f for f in conn.execute("SELECT key, title, severity, known FROM findings")}
    occurrences = conn.execute("SELECT key, run_id, count, label FROM occurrences ORDER BY key")  # the primary key
    for key, group in itertools.groupby(occurrences, key=lambda o: o["key"]):
        seen = [(runs[o["run_id"]], o["count"], o["label"]) for o in group if o["run_id"] in runs]
        if not seen or key not in findings:
            continue
        cause = _cause(findings[key], seen, repros.get(key, []), bench_runs, bench_nights, config_nights, matrix,
                       index, latest, fixed_after, flaky_below)
        causes.append(each(cause, bench_nights) if each else cause)
        for r, _, _ in seen:
            matrix[(r["device"] or "?", r["driver"] or "?", r["model"] or "?", r["backend"] or "?")]["causes"].add(key)
    order = {s: i for i, s in enumerate(STATUSES)}
    causes.sort(key=lambda c: (order[c["status"]], c["first_night"], c["key"]))
    view = {"nights": nights, "latest_night": latest, "runs": len(runs), "runs_per_night": runs_per_night,
            "fixed_after": fixed_after, "flaky_below": flaky_below, "causes": causes,
            "counts": {s: sum(c["status"] == s for c in causes) for s in STATUSES},
            "matrix": [{"device": k[0], "driver": k[1], "model": k[2], "backend": k[3], "runs": v["runs"],
                        "nights": len(v["nights"]), "causes": sorted(v["causes"])}
                       for k, v in sorted(matrix.items())]}
    return view


def _cause(f, seen, repros, bench_runs, bench_nights, config_nights, cell_nights, index, latest, fixed_after,
           flaky_below) -> dict:
    per_night: dict[str, list] = {}      # night -> [runs with it, occurrences]
    had_benches: dict[tuple, list] = {}
    had_configs: dict[tuple, set] = {}
    cells: dict[tuple, set] = {}
    labels: dict[str, int] = {}
    for r, count, label in seen:
        n = per_night.setdefault(r["night"], [0, 0])
        n[0] += 1
        n[1] += count or 0
        b = _bench(r)
        had_benches.setdefault(b, []).append(r)
        had_configs.setdefault(b + (r["mnn_version"], r["driver"]), set()).add(r["night"])
        cells.setdefault((r["device"] or "?", r["driver"] or "?", r["model"] or "?", r["backend"] or "?"),
                         set()).add(r["night"])
        if label:
            labels[label] = labels.get(label, 0) + 1
    first, last = min(per_night), max(per_night)
    nights_seen = sum(len(s) for s in had_configs.values())
    nights_run = sum(len(config_nights[c]) for c in had_configs)
    reliability = nights_seen / nights_run if nights_run else None

    regressions, fixes, clean_after = [], [], set()
    for b, with_it in had_benches.items():
        runs = bench_runs[b]
        firsts = min(index[r["run_id"]] for r in with_it)
        lasts = max(index[r["run_id"]] for r in with_it)
        if firsts > 0:
            rng = _range(_version(runs[firsts - 1]), _version(runs[firsts]))
            if rng:
                regressions.append(dict(rng, bench=list(b)))
        if lasts + 1 < len(runs):
            rng = _range(_version(runs[lasts]), _version(runs[lasts + 1]))
            if rng:
                fixes.append(dict(rng, bench=list(b)))
        clean_after |= {n for n in bench_nights[b] if n > last}
    regressions.sort(key=lambda x: (x["to"]["night"], x["bench"]))
    fixes.sort(key=lambda x: (x["to"]["night"], x["bench"]))

    if len(clean_after) >= fixed_after:
        status = "fixed"
    elif len(per_night) >= 2 and (labels.get("flake") or (reliability is not None and reliability < flaky_below)):
        status = "flaky"
    elif last != latest:
        status = "not seen lately"
    elif first == latest:
        status = "new"
    elif regressions:
        status = "regressed"
    else:
        status = "open"
    matrix = []
    for k, s in sorted(cells.items()):
        matrix.append({"device": k[0], "driver": k[1], "model": k[2], "backend": k[3], "nights_seen": len(s),
                       "nights_run": len(cell_nights[k]["nights"])})
    latest_run = max((r for r, _, _ in seen), key=lambda r: (r["night"], r["run_id"]))
    return {
        "key": f["key"], "title": f["title"], "severity": f["severity"], "known": bool(f["known"]),
        "status": status, "first_night": first, "last_night": last,
        "nights_seen": nights_seen, "nights_run": nights_run, "reliability": reliability,
        "clean_nights_after": len(clean_after), "runs": len(seen),
        "occurrences": sum(c or 0 for _, c, _ in seen),
        "per_night": {n: {"runs": v[0], "count": v[1]} for n, v in sorted(per_night.items())},
        "regression": regressions[0] if regressions else None, "regressions": regressions,
        "fix": fixes[-1] if fixes and status == "fixed" else None, "fixes": fixes,
        "labels": labels, "devices": sorted({b[0] for b in had_benches}),
        "benches": [list(b) for b in sorted(had_benches)],
        "matrix": matrix,
        "latest_run": {"run_id": latest_run["run_id"], "run_dir": latest_run["run_dir"],
                       "night": latest_run["night"]},
        "repro": _repro_summary(repros),
    }


def _repro_summary(repros: list[dict]) -> dict | None:
    """Whether a reproducer exists and how reliable it is (over every recorded attempt)."""
    if not repros:
        return None
    attempts = sum(r["attempts"] or 0 for r in repros)
    reproduced = sum(r["reproduced"] or 0 for r in repros)
    return {"attempts": attempts, "reproduced": reproduced,
            "reliability": reproduced / attempts if attempts else None,
            "items": [{k: r[k] for k in ("run_id", "run_dir", "path", "attempts", "reproduced", "command")}
                      for r in repros]}

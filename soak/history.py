"""Night-to-night history of findings, in one SQLite file (issue 16).

    add_runs(db, [run folders])      store each run's context and findings (idempotent)
    findings(db)                     every finding with first/last seen, counts, devices
    new_findings(db, window_h)       what is new in the latest night
    since_build(db, key)             which MNN build a finding first appeared in
    by_driver(db, key)               on which GPU drivers it appears, and where it never did

A finding is one of the classifier's root causes (its cascade folded in; benign
probes left out); its key is its catalog id when the classifier matched one, else
its signature (`sig-...`).  The file needs no server; parallel CI jobs may add to it
at the same time: every write is one `BEGIN IMMEDIATE` transaction, WAL mode,
with a busy timeout, so writers queue instead of failing.  The schema version is
SQLite's `user_version`; `_MIGRATIONS` upgrades an older file in place.

This module reads run folders (manifest.json, classification.json) and writes
only the database: it is an output of the analysis, never an input to it.
"""

from __future__ import annotations

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
    }


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


def add_run(conn: sqlite3.Connection, run_dir: Path, manifest: dict, classification: dict,
            summary: dict) -> Added:
    """Store one run from its already-read files (`soak merge` reads them once for both)."""
    run_id = _text(manifest.get("run_id")) or Path(run_dir).name
    context = run_context(manifest)
    rows = run_findings(classification)
    with _write(conn):
        replaced = conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0
        conn.execute(
            "INSERT INTO runs (run_id, added, end_reason, iterations, " + ", ".join(context) + ") "
            "VALUES (?, ?, ?, ?, " + ", ".join("?" * len(context)) + ")",
            (run_id, _now(), _text(summary.get("end_reason")),
             summary.get("iterations") if isinstance(summary.get("iterations"), int) else None,
             *context.values()))
        for row in rows:
            conn.execute(
                "INSERT INTO findings (key, title, severity, known) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET title = coalesce(excluded.title, title), "
                "severity = coalesce(excluded.severity, severity), known = max(known, excluded.known)",
                (row["key"], row["title"], row["severity"], int(row["known"])))
            conn.execute("INSERT INTO occurrences VALUES (?, ?, ?, ?, ?)",
                         (row["key"], run_id, row["count"], row["first_iteration"], row["last_iteration"]))
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

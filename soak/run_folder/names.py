"""The run folder's file names and its schema version: the only place that
spells a file name of logs/<run-id>/ (tests/core/test_run_folder_contract.py
fails on a literal elsewhere in soak/).

Judging commands (classify, gate, report, bundle) read a run folder and write
only their own outputs: `CLASSIFICATION`, `GATE`, the report and the bundle.
`VERDICTS` is written by `soak run` (and by `soak report` when missing).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from soak.errors import BadInput

# --- names ---------------------------------------------------------------------
EVENTS = "events.jsonl"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
VERDICTS = "verdicts.json"
CLASSIFICATION = "classification.json"
GATE = "gate.json"                 # `soak gate` / `soak run --gate`: the rules and their results
GATE_JUNIT = "gate-junit.xml"
ENGINE_LOG = "engine.log"
LOCK = "run.lock"                  # held (flock) by the writer while the run is going on
RESERVE = ".soak-reserve"          # room kept to end a run on a full disk (soak.loop.reserve)
TEST_ENGINE = "test_engine.json"   # the test engine's config and fault plan (test-engine runs)
CL_TRACE = "cl_trace.jsonl"        # the interposer's records
CL_STATS_PATTERN = "cl_trace.%p.stats"  # the interposer's counters, one file per process (%p: its pid)
CL_STATS_GLOB = "cl_trace.*.stats"
CL_TRACE_GLOB = "cl_trace.*"       # every interposer file of the folder
REPRO = "repro"                    # `soak repro`'s folder: REPRO_META says which causes it reproduces, how often
REPRO_META = "repro.json"          # inside REPRO (format: soak.history.read_repro)
# inside REPRO/<cause>/ (soak.outputs.repro_files): the reproducer of one cause
REPRO_SCRIPT = "script.json"       # the minimal workload: turns, replayable (`soak replay REPRO`)
REPRO_CONFIG = "run_config.json"   # its RunConfig (as a manifest's `config`)
REPRO_RESULT = "result.json"       # reliability, steps taken, time spent, the fault rule
REPRO_README = "repro.md"          # for a human
REPRO_MNN = "mnn-reproducer"     # the standalone MNN reproducer (llm_demo, a C++ program)
REPRO_RUNS = "reliability-runs"   # the reliability runs (run folders)
REPRO_WORK = "candidates"         # candidate runs while reducing (removed at the end)
REPRO_REPLAYS = "replays"          # `soak replay REPRO/<cause>`: its runs
RERUNS = "reruns"                  # `soak gate --rerun-unexpected`: its re-runs (run folders), inside the run

# Not in a run folder: `soak merge -o DIR` writes its table of many runs as
# DIR/MERGE_TABLE, never under a run folder's name (a run's CLASSIFICATION is
# another table).
MERGE_TABLE = "merge.json"
REFERENCE = "reference.jsonl"      # `soak reference`: the oracle's turns (soak.oracle.reference)

# every name above: a literal of one of these outside soak/run_folder/ is a second copy
FILE_NAMES = (EVENTS, MANIFEST, SUMMARY, VERDICTS, CLASSIFICATION, GATE, GATE_JUNIT, ENGINE_LOG, LOCK, RESERVE,
              TEST_ENGINE, CL_TRACE, CL_STATS_PATTERN, CL_STATS_GLOB, CL_TRACE_GLOB, MERGE_TABLE, REFERENCE, REPRO,
              REPRO_META, REPRO_SCRIPT, REPRO_CONFIG, REPRO_RESULT, REPRO_README, REPRO_MNN, REPRO_RUNS, REPRO_WORK,
              REPRO_REPLAYS, RERUNS)

# --- schema ----------------------------------------------------------------------
# major.minor.  A new minor adds fields readers may ignore; a new major changes
# the meaning of existing ones, so an older soak refuses to read it.
SCHEMA_MAJOR = 1
SCHEMA_MINOR = 1
SCHEMA = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"


def schema_major(value) -> int | None:
    """The major version of a `schema` field: "1.1" -> 1, 1 -> 1 (folders
    before the minor number); None when absent or unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)(?:\.\d+)?\s*", value)
        return int(m.group(1)) if m else None
    return None


def check_schema(value, where: str) -> None:
    """BadInput when `value` names a newer major schema than this soak reads."""
    major = schema_major(value)
    if major is not None and major > SCHEMA_MAJOR:
        raise BadInput(f"{where} was written with run-folder schema {value}; this soak reads schema "
                       f"{SCHEMA_MAJOR}.x", hint="upgrade soak (pip install -U soak) to read this run folder")


# --- what a run folder is ----------------------------------------------------------
def is_run_folder(path: str | Path) -> bool:
    """A folder with an event log: what `soak run` writes."""
    path = Path(path)
    return path.is_dir() and (path / EVENTS).is_file()


def is_classifiable(path: str | Path) -> bool:
    """A run folder, or a folder holding only an engine log (a raw `llm_demo`
    log), which the classifier also reads."""
    path = Path(path)
    return is_run_folder(path) or (path.is_dir() and (path / ENGINE_LOG).is_file())


def events_path(run: str | Path) -> Path:
    run = Path(run)
    return run / EVENTS if run.is_dir() else run

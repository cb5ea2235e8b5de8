"""The run folder (logs/<run-id>/): the one package that owns it.

Everything that writes or reads a run folder goes through here, one module a job:
- `names`: the file names (`EVENTS`, `MANIFEST`, ...), the schema version
  (written in `run_start` and in manifest.json, checked on read: a folder
  written by a newer major version is bad input, exit 3), what a run folder is;
- `atomic`: atomic writes (`write_json`, `write_bytes`);
- `manifest`: the folder's JSON files as read, `read_manifest` (the one
  manifest reader, schema-checked) and `require`;
- `event_types`: every event type soak writes, with its fields and their types;
- `reader`: the event reader (`read_events`, `EventReader`), streaming, with one
  rule for damaged lines, and `sanitize` (fields of the wrong type dropped);
- `state`: whether a run is still being written (`state`), from `run_end` and
  the lock the writer holds (`WriterLock`);
- `reduce`: one pass over the events feeding many reducers, split over forked
  processes for a long log (`reduce_lines`, `feed_range`).

The names below are re-exported so callers import `soak.run_folder` only.
"""

from soak.errors import BadInput
from soak.run_folder.atomic import finite, write_bytes, write_json
from soak.run_folder.event_types import ENVELOPE_TYPES, EVENT_NAMES, EVENT_TYPES
from soak.run_folder.manifest import DamagedFile, read_json, read_manifest, require
from soak.run_folder.names import (CL_STATS_GLOB, CL_STATS_PATTERN, CL_TRACE, CL_TRACE_GLOB, CLASSIFICATION,
                                   ENGINE_LOG, EVENTS, FILE_NAMES, GATE, GATE_JUNIT, LOCK, MANIFEST, MERGE_TABLE,
                                   REFERENCE, REPRO, REPRO_CONFIG, REPRO_META, REPRO_MNN, REPRO_README,
                                   REPRO_REPLAYS, REPRO_RESULT, REPRO_RUNS, REPRO_SCRIPT, REPRO_WORK, RERUNS,
                                   RESERVE, SCHEMA, SCHEMA_MAJOR, SCHEMA_MINOR,
                                   SUMMARY, TEST_ENGINE, VERDICTS,
                                   check_schema, events_path, is_classifiable, is_run_folder, schema_major)
from soak.run_folder.reader import (DamagedEvents, EventReader, bad_shape, damaged_line_error, decode_line,
                                    line_number, loads_line, read_events, sanitize)
from soak.run_folder.reduce import Damaged, feed_range, reduce_lines
from soak.run_folder.state import COMPLETE, ENDED_WITHOUT_RUN_END, RUNNING, WriterLock, has_run_end, state

__all__ = [
    "BadInput", "finite", "write_bytes", "write_json", "ENVELOPE_TYPES", "EVENT_NAMES", "EVENT_TYPES",
    "DamagedFile", "read_json", "read_manifest", "require", "CL_STATS_GLOB", "CL_STATS_PATTERN", "CL_TRACE",
    "CL_TRACE_GLOB", "CLASSIFICATION", "ENGINE_LOG", "EVENTS", "FILE_NAMES", "GATE", "GATE_JUNIT", "LOCK",
    "MANIFEST", "MERGE_TABLE", "REFERENCE", "REPRO", "REPRO_CONFIG", "REPRO_META", "REPRO_MNN",
    "REPRO_README", "REPRO_REPLAYS", "REPRO_RESULT", "REPRO_RUNS", "REPRO_SCRIPT", "REPRO_WORK", "RERUNS",
    "RESERVE", "SCHEMA", "SCHEMA_MAJOR",
    "SCHEMA_MINOR", "SUMMARY", "TEST_ENGINE",
    "VERDICTS", "check_schema", "events_path", "is_classifiable", "is_run_folder", "schema_major",
    "DamagedEvents", "EventReader", "bad_shape", "damaged_line_error", "decode_line", "line_number", "loads_line",
    "read_events", "sanitize", "Damaged", "feed_range", "reduce_lines", "COMPLETE", "ENDED_WITHOUT_RUN_END",
    "RUNNING", "WriterLock", "has_run_end", "state",
]

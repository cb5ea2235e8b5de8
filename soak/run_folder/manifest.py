"""The run folder's JSON files as read: `read_json` (any of them),
`read_manifest` (manifest.json, schema-checked: the one manifest reader) and
`require` (a path as a run folder, or why it is not one)."""

from __future__ import annotations

import json
from pathlib import Path

from soak.errors import BadInput
from soak.run_folder.names import CLASSIFICATION, EVENTS, MANIFEST, SUMMARY, VERDICTS, check_schema


class DamagedFile(BadInput):
    """A JSON file of the folder that is not one JSON object (exit 3);
    `problem` says what is wrong without the path ("unreadable: ...")."""

    def __init__(self, message: str, hint: str | None = None, problem: str = ""):
        super().__init__(message, hint)
        self.problem = problem


def read_json(path: str | Path) -> dict | None:
    """A JSON object file of the folder; None when absent; DamagedFile when damaged."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8", "surrogatepass"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedFile(f"{path} is not valid JSON ({exc})",
                          hint="the run folder is damaged; re-run `soak run`, or delete the file "
                               f"if it is optional ({SUMMARY}, {VERDICTS}, {CLASSIFICATION})",
                          problem=f"unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise DamagedFile(f"{path} does not hold a JSON object", hint="the run folder is damaged",
                          problem="is not a JSON object")
    return data


def read_manifest(run: str | Path) -> dict | None:
    """The manifest of the run folder `run`: None when it has none;
    DamagedFile when it is not one JSON object; BadInput (exit 3) when a
    newer major schema wrote it.  Every reader of a manifest goes through here."""
    path = Path(run) / MANIFEST
    manifest = read_json(path)
    if manifest is not None:
        check_schema(manifest.get("schema"), str(path))
    return manifest


def require(path: str | Path) -> Path:
    """`path` as a run folder, or BadInput saying why it is not one.  Checks
    the schema of manifest.json (the events' run_start is checked as it is read)."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"run folder {path} does not exist",
                       hint="pass a folder written by `soak run`, e.g. logs/<run-id>")
    if not (path / EVENTS).is_file():
        raise BadInput(f"{path} has no {EVENTS}, so it is not a soak run folder",
                       hint="pass a folder written by `soak run`, e.g. logs/<run-id>")
    try:
        read_manifest(path)
    except DamagedFile:
        pass  # a reader that needs it says so; the classifier works without it
    return path

"""Load a fault-catalog folder: every *.yaml / *.yml file, checked against
soak.catalog.schema.  Any problem raises CatalogInvalid listing each one as
`file:line: what is wrong`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from soak.catalog import _validate as V
from soak.catalog.schema import Entry
from soak.errors import CatalogInvalid

ENV_VAR = "SOAK_CATALOG"
_HINT = ("pass --catalog DIR (the fault_catalog/ folder of a soak checkout), or set "
         f"{ENV_VAR}=DIR")


@dataclass
class Catalog:
    path: Path | None
    entries: list[Entry] = field(default_factory=list)
    note: str | None = None  # why it is empty, when it is

    def get(self, entry_id: str) -> Entry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def __len__(self) -> int:
        return len(self.entries)


def default_catalog_dir() -> Path | None:
    """$SOAK_CATALOG, else a fault_catalog/ shipped inside the package, else
    the checkout's fault_catalog/ beside the package.

    A non-editable install without package data has neither; then this
    returns None and callers say so (see `_HINT`).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "fault_catalog", package.parent / "fault_catalog"):
        if candidate.is_dir():
            return candidate
    return None


def catalog_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_catalog(directory: str | os.PathLike | None = None) -> Catalog:
    """Load and validate a catalog folder (default: `default_catalog_dir()`)."""
    if directory is None:
        found = default_catalog_dir()
        if found is None:
            raise CatalogInvalid("no fault catalog found: this soak install has no fault_catalog/ folder",
                                 hint=_HINT)
        directory = found
    path = Path(directory)
    if not path.is_dir():
        raise CatalogInvalid(f"fault catalog folder {path} does not exist or is not a folder", hint=_HINT)
    files = catalog_files(path)
    if not files:
        raise CatalogInvalid(f"fault catalog folder {path} holds no .yaml files", hint=_HINT)
    problems: list[str] = []
    entries: list[Entry] = []
    for file in files:
        got, probs = load_file(file, display=_display(file))
        entries.extend(got)
        problems.extend(probs)
    seen: dict[str, Entry] = {}
    for e in entries:
        if e.id in seen:
            problems.append(f"{e.source}: duplicate id {e.id!r} (first defined at {seen[e.id].source})")
        else:
            seen[e.id] = e
    if problems:
        raise CatalogInvalid(
            f"fault catalog {path} is invalid ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n  "
            + "\n  ".join(problems),
            hint="fix the lines named above; `soak catalog validate --catalog DIR` checks again",
        )
    return Catalog(path=path, entries=list(seen.values()))


def load_file(file: Path, display: str | None = None) -> tuple[list[Entry], list[str]]:
    """Entries of one file, and its problems as `file:line: message`."""
    name = display or str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return [], [f"{name}:1: not UTF-8 text ({exc.reason} at byte {exc.start})"]
    except OSError as exc:
        return [], [f"{name}:1: cannot read: {exc.strerror}"]
    try:
        docs = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        return [], [f"{name}:{line}: YAML syntax error: {what}"]
    except yaml.YAMLError as exc:
        return [], [f"{name}:1: YAML error: {exc}"]
    p = V.Problems(name, text)
    entries: list[Entry] = []
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, yaml.SequenceNode):
            nodes = doc.value
        elif isinstance(doc, yaml.MappingNode):
            nodes = [doc]
        else:
            p.add(doc, "a catalog file holds an entry (mapping) or a list of entries")
            continue
        for node in nodes:
            e = V.entry(node, p)
            if e is not None:
                entries.append(e)
    V.forget()
    return entries, p.items


def _display(file: Path) -> str:
    try:
        rel = os.path.relpath(file)
    except ValueError:
        return str(file)
    return str(file) if rel.startswith("..") else rel

"""`soak catalog validate|list|show`: check and browse the fault catalog."""

from __future__ import annotations

import argparse
import difflib
import json

import yaml

from soak.catalog import table
from soak.catalog.loader import catalog_files, default_catalog_dir, load_catalog
from soak.catalog.schema import SEVERITY_RANK, human_params
from soak.errors import BadInput

DESCRIPTION = """\
The fault catalog is a folder of YAML files (default: the checkout's
fault_catalog/, or $SOAK_CATALOG). Each entry says what a known fault looks
like (CL codes, log lines, signal, phase, output symptoms), where it applies
(model size, GPU, driver, MNN version, backend options, OS) and what to do.

  soak catalog validate [--catalog DIR]   exit 10 and file:line for each problem
  soak catalog list [--json]
  soak catalog show ID
"""


def _catalog_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", metavar="DIR", help="catalog folder (default: fault_catalog/ of this checkout)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    v = sub.add_parser("validate", help="check every entry against the schema")
    _catalog_arg(v)
    ls = sub.add_parser("list", help="one line per entry")
    _catalog_arg(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    sh = sub.add_parser("show", help="one entry in full")
    _catalog_arg(sh)
    sh.add_argument("id", metavar="ID")
    sh.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    cat = load_catalog(args.catalog)  # raises CatalogInvalid (exit 10)
    if args.action == "validate":
        files = catalog_files(cat.path)
        known = sum(1 for e in cat.entries if not e.id.startswith("soak-"))
        print(f"{cat.path}: {len(cat.entries)} entries in {len(files)} files, valid "
              f"({known} from reports, {len(cat.entries) - known} soak-defined)")
        return 0
    if args.action == "list":
        entries = sorted(cat.entries, key=lambda e: (SEVERITY_RANK[e.severity], e.id))
        if args.json:
            print(json.dumps([_summary(e) for e in entries], indent=1, ensure_ascii=False))
            return 0
        rows = [[e.severity, e.id, _context(e), e.title] for e in entries]
        print(table.render(["SEVERITY", "ID", "APPLIES TO", "TITLE"], rows))
        return 0
    entry = cat.get(args.id)
    if entry is None:
        all_ids = [e.id for e in cat.entries]
        near = [i for i in all_ids if i.startswith(args.id)][:3] or \
            difflib.get_close_matches(args.id, all_ids, n=3, cutoff=0.4)
        raise BadInput(f"no catalog entry {args.id!r} in {cat.path}",
                       hint=("did you mean " + ", ".join(near) + "?") if near else "`soak catalog list` shows the ids")
    if args.json:
        print(json.dumps({**entry.raw, "source": entry.source}, indent=1, ensure_ascii=False, default=str))
        return 0
    print(f"# {entry.source}")
    print(yaml.safe_dump(entry.raw, sort_keys=False, allow_unicode=True, width=100).rstrip())
    return 0


def _summary(e) -> dict:
    return {"id": e.id, "title": e.title, "severity": e.severity, "generic": e.generic,
            "reports": list(e.reports), "applies_to": _context(e), "source": e.source,
            "references": list(e.remedy.references)}


def _context(e) -> str:
    a = e.applies_to
    parts = []
    if a.model_params:
        lo, hi = a.model_params
        parts.append(f"{human_params(lo) if lo else ''}..{human_params(hi) if hi else ''}")
    if a.model_family:
        parts.append(a.model_family.pattern)
    if a.gpu_model:
        parts.append(a.gpu_model.pattern.replace("(?i)", ""))
    elif a.gpu_vendor:
        parts.append(a.gpu_vendor.pattern.replace("(?i)", ""))
    if a.os:
        parts.append("/".join(sorted(a.os)))
    if a.mnn_version:
        parts.append("MNN " + a.mnn_version.text)
    return " ".join(parts) or "any"


__all__ = ["DESCRIPTION", "add_arguments", "run", "default_catalog_dir"]

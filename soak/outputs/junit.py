"""JUnit XML for the gate: one <testcase> per policy rule, failure text that says why.

The layout is the common denominator that Jenkins, GitLab, GitHub test
reporters and Azure read: <testsuites><testsuite name tests failures errors
skipped time timestamp><testcase classname name time>[<failure message
type>text</failure>]<system-out>...</system-out></testcase>.
"""

from __future__ import annotations

import datetime as _dt
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from soak.errors import BadInput

_BAD_XML_CHARS = {c: None for c in range(32) if c not in (9, 10, 13)}


def _clean(text: str) -> str:
    """XML 1.0 forbids most control characters (prompts and logs may carry them)."""
    return str(text).translate(_BAD_XML_CHARS)


def junit_tree(results, suite_name: str, run_id: str) -> ET.ElementTree:
    failures = sum(1 for r in results if not r.passed)
    root = ET.Element("testsuites", name="soak", tests=str(len(results)), failures=str(failures), errors="0")
    suite = ET.SubElement(root, "testsuite", name=_clean(suite_name), tests=str(len(results)),
                          failures=str(failures), errors="0", skipped="0", time="0",
                          timestamp=_dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"))
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="run_id", value=_clean(run_id))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=_clean(f"soak.gate.{r.section}"), name=_clean(r.name), time="0")
        if not r.passed:
            fail = ET.SubElement(case, "failure", message=_clean(r.message), type="GateRuleFailed")
            fail.text = _clean("\n".join([r.message, *r.details]))
        out = ET.SubElement(case, "system-out")
        out.text = _clean("\n".join([r.message, *r.details]))
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results, path: Path, suite_name: str, run_id: str) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        junit_tree(results, suite_name, run_id).write(tmp, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write JUnit file {path}: {exc}", hint="give a writable path to --junit") from None
    return path

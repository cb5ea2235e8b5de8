"""JUnit XML for the gate: one <testcase> per policy rule, failure text that says why.

The layout is the common denominator that Jenkins, GitLab, GitHub test
reporters and Azure read: <testsuites><testsuite name tests failures errors
skipped time timestamp><testcase classname name time>[<failure message
type>text</failure> | <skipped message/> | <error message type/>]
<system-out>...</system-out></testcase>.

The suite name carries the policy, run id, device and model, so suites from
different runs never collide in a CI's test history.  A rule that could not
be judged is <skipped>, never a pass.  When the gate cannot run at all (bad
policy, not a run folder), `write_error_junit` still writes a file with one
<error> case, so the CI page says why.
"""

from __future__ import annotations

import datetime as _dt
import io
import xml.etree.ElementTree as ET
from pathlib import Path

from soak.run_folder import write_bytes

_BAD_XML_CHARS = {c: None for c in range(32) if c not in (9, 10, 13)}


def _clean(text: str) -> str:
    """XML 1.0 forbids most control characters (prompts and logs may carry them)."""
    return str(text).translate(_BAD_XML_CHARS)


def suite_title(suite_name: str, run_id: str, device: str | None = None, model: str | None = None) -> str:
    return " | ".join([suite_name, run_id] + [x for x in (device, model) if x])


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


def _root(suite_name: str, run_id: str, tests: int, failures: int, errors: int, skipped: int, time_s: float,
          device: str | None, model: str | None) -> tuple[ET.Element, ET.Element]:
    root = ET.Element("testsuites", name="soak", tests=str(tests), failures=str(failures), errors=str(errors),
                      skipped=str(skipped), time=f"{time_s:.3f}")
    suite = ET.SubElement(root, "testsuite", name=_clean(suite_title(suite_name, run_id, device, model)),
                          tests=str(tests), failures=str(failures), errors=str(errors), skipped=str(skipped),
                          time=f"{time_s:.3f}", timestamp=_now())
    props = ET.SubElement(suite, "properties")
    for k, v in (("run_id", run_id), ("policy", suite_name), ("device", device), ("model", model)):
        if v:
            ET.SubElement(props, "property", name=k, value=_clean(v))
    return root, suite


def junit_tree(results, suite_name: str, run_id: str, device: str | None = None, model: str | None = None,
               time_s: float | None = None) -> ET.ElementTree:
    skipped = sum(1 for r in results if r.skipped)
    failures = sum(1 for r in results if not r.passed and not r.skipped)
    total = sum(r.time_s for r in results) if time_s is None else time_s
    root, suite = _root(suite_name, run_id, len(results), failures, 0, skipped, total, device, model)
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=_clean(f"soak.gate.{r.section}"), name=_clean(r.name),
                             time=f"{r.time_s:.3f}")
        if r.skipped:
            ET.SubElement(case, "skipped", message=_clean(r.message))
        elif not r.passed:
            fail = ET.SubElement(case, "failure", message=_clean(r.message), type="GateRuleFailed")
            fail.text = _clean("\n".join([r.message, *r.details]))
        out = ET.SubElement(case, "system-out")
        out.text = _clean("\n".join([r.message, *r.details]))
    ET.indent(root)
    return ET.ElementTree(root)


def _write(tree: ET.ElementTree, path: Path) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    write_bytes(path, buf.getvalue())
    return path


def write_junit(results, path: Path, suite_name: str, run_id: str, device: str | None = None,
                model: str | None = None, time_s: float | None = None) -> Path:
    return _write(junit_tree(results, suite_name, run_id, device, model, time_s), path)


def write_error_junit(path: Path, suite_name: str, run_id: str, message: str, hint: str | None = None,
                      time_s: float = 0.0) -> Path:
    """One <error> case: the gate could not judge (bad input).  Never raises over the original error."""
    root, suite = _root(suite_name, run_id, 1, 0, 1, 0, time_s, None, None)
    case = ET.SubElement(suite, "testcase", classname="soak.gate.input", name="gate.input", time=f"{time_s:.3f}")
    err = ET.SubElement(case, "error", message=_clean(message), type="BadInput")
    err.text = _clean("\n".join([message] + ([f"hint: {hint}"] if hint else [])))
    ET.indent(root)
    return _write(ET.ElementTree(root), path)

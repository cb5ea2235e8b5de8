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

Every JUnit file soak writes is built here: `testsuites`, `testsuite` and
`testcase` are the one layout (soak merge writes one suite per run with them),
`write_tree` the one atomic write.
"""

from __future__ import annotations

import datetime as _dt
import io
import xml.etree.ElementTree as ET
from pathlib import Path

from soak.run_folder import write_bytes

_BAD_XML_CHARS = {c: None for c in range(32) if c not in (9, 10, 13)}


def clean(text) -> str:
    """XML 1.0 forbids most control characters (prompts and logs may carry them)."""
    return str(text).translate(_BAD_XML_CHARS)


def suite_title(suite_name: str, run_id: str, device: str | None = None, model: str | None = None) -> str:
    return " | ".join([suite_name, run_id] + [x for x in (device, model) if x])


def now() -> str:
    """A JUnit timestamp: UTC, no zone, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


def testsuites(name: str, tests: int, failures: int, errors: int, skipped: int,
               time_s: float | None = None) -> ET.Element:
    """The root element."""
    root = ET.Element("testsuites", name=clean(name), tests=str(tests), failures=str(failures),
                      errors=str(errors), skipped=str(skipped))
    if time_s is not None:
        root.set("time", f"{time_s:.3f}")
    return root


def testsuite(root: ET.Element, name: str, tests: int, failures: int, errors: int, skipped: int, time_s: float,
              timestamp: str, properties, hostname: str | None = None) -> ET.Element:
    """One <testsuite> with its <properties> ((name, value) pairs, written as given)."""
    suite = ET.SubElement(root, "testsuite", name=clean(name), tests=str(tests), failures=str(failures),
                          errors=str(errors), skipped=str(skipped), time=f"{time_s:.3f}", timestamp=timestamp)
    if hostname is not None:
        suite.set("hostname", clean(hostname))
    props = ET.SubElement(suite, "properties")
    for k, v in properties:
        ET.SubElement(props, "property", name=k, value=clean(v))
    return suite


def testcase(suite: ET.Element, classname: str, name: str, time_s: float = 0.0, *, skipped: str | None = None,
             failure: str | None = None, failure_type: str = "SoakFailure", text: str = "",
             out: str | None = None) -> ET.Element:
    """One <testcase>: <skipped message> (a rule not judged), else <failure message type>text (failed),
    then <system-out> when `out` is given."""
    case = ET.SubElement(suite, "testcase", classname=clean(classname), name=clean(name), time=f"{time_s:.3f}")
    if skipped is not None:
        ET.SubElement(case, "skipped", message=clean(skipped))
    elif failure is not None:
        fail = ET.SubElement(case, "failure", message=clean(failure), type=failure_type)
        fail.text = clean(text)
    if out is not None:
        ET.SubElement(case, "system-out").text = clean(out)
    return case


def _root(suite_name: str, run_id: str, tests: int, failures: int, errors: int, skipped: int, time_s: float,
          device: str | None, model: str | None) -> tuple[ET.Element, ET.Element]:
    root = testsuites("soak", tests, failures, errors, skipped, time_s)
    props = [(k, v) for k, v in (("run_id", run_id), ("policy", suite_name), ("device", device), ("model", model))
             if v]
    suite = testsuite(root, suite_title(suite_name, run_id, device, model), tests, failures, errors, skipped,
                      time_s, now(), props)
    return root, suite


def junit_tree(results, suite_name: str, run_id: str, device: str | None = None, model: str | None = None,
               time_s: float | None = None) -> ET.ElementTree:
    skipped = sum(1 for r in results if r.skipped)
    failures = sum(1 for r in results if not r.passed and not r.skipped)
    total = sum(r.time_s for r in results) if time_s is None else time_s
    root, suite = _root(suite_name, run_id, len(results), failures, 0, skipped, total, device, model)
    for r in results:
        text = "\n".join([r.message, *r.details])
        testcase(suite, f"soak.gate.{r.section}", r.name, r.time_s, skipped=r.message if r.skipped else None,
                 failure=None if r.passed else r.message, failure_type="GateRuleFailed", text=text, out=text)
    ET.indent(root)
    return ET.ElementTree(root)


def write_tree(tree: ET.ElementTree, path: Path) -> Path:
    """Write a JUnit tree atomically (soak.run_folder.write_bytes: bad input naming the file on failure)."""
    path = Path(path)
    buf = io.BytesIO()
    tree.write(buf, encoding="utf-8", xml_declaration=True)
    write_bytes(path, buf.getvalue())
    return path


def write_junit(results, path: Path, suite_name: str, run_id: str, device: str | None = None,
                model: str | None = None, time_s: float | None = None) -> Path:
    return write_tree(junit_tree(results, suite_name, run_id, device, model, time_s), path)


def write_error_junit(path: Path, suite_name: str, run_id: str, message: str, hint: str | None = None,
                      time_s: float = 0.0) -> Path:
    """One <error> case: the gate could not judge (bad input).  Never raises over the original error."""
    root, suite = _root(suite_name, run_id, 1, 0, 1, 0, time_s, None, None)
    case = ET.SubElement(suite, "testcase", classname="soak.gate.input", name="gate.input", time=f"{time_s:.3f}")
    err = ET.SubElement(case, "error", message=clean(message), type="BadInput")
    err.text = clean("\n".join([message] + ([f"hint: {hint}"] if hint else [])))
    ET.indent(root)
    return write_tree(ET.ElementTree(root), path)

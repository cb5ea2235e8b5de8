"""`soak merge`: every run folder of a night -> one table, one HTML report, one JUnit (issue 16).

A lab runs one CI job per phone; each job leaves a run folder (classified at
the run's end).  The merge job reads them all and writes into one folder:

    merge.json            each finding once, with per-device counts; the devices; the run list
    report.html           findings x devices, devices, runs (end reason, link to the folder)
    junit.xml             one <testsuite> per run (run id, device and model in its name),
                          from the run's gate results, else from its classification

It reads each run's classification.json and never re-classifies one that has
it; a run without one (killed before its end) is classified in memory, and
its folder is left as it was.  Runs are read one at a time and only a small
record of each is kept, so memory stays bounded for a thousand runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from soak.catalog.classify import OUTPUT_NAME as CLASSIFICATION, classify_run, find_runs, is_run_dir
from soak.catalog.schema import SEVERITY_RANK
from soak import run_folder
from soak.end_reasons import conclude
from soak.errors import BadInput
from soak.history import gate_labels, run_context, run_findings
from soak.manifest import NETWORK_SERIAL
from soak.outputs import junit as junit_xml
from soak.outputs.html_page import esc as _e, page_head

FORMAT_VERSION = 1
TABLE_NAME = run_folder.MERGE_TABLE    # not CLASSIFICATION: that is one run's table
REPORT_NAME = "report.html"
JUNIT_NAME = "junit.xml"
GATE_JSON, GATE_JUNIT = run_folder.GATE, run_folder.GATE_JUNIT
SUMMARY, MANIFEST, EVENTS = run_folder.SUMMARY, run_folder.MANIFEST, run_folder.EVENTS
# severities that fail a run's JUnit when it has no gate results (the default gate's spirit)
FAILING_SEVERITIES = ("critical", "high")


@dataclass
class Case:
    """One JUnit test case of a run."""
    name: str
    classname: str
    passed: bool
    message: str
    text: str = ""
    skipped: bool = False       # a gate rule that could not be judged (no data)

    @property
    def failed(self) -> bool:
        return not self.passed and not self.skipped  # a rule not judged fails nothing


@dataclass
class RunRecord:
    """What the merge keeps of one run (small: a thousand of them fit easily)."""
    run_id: str
    run_dir: str
    device: str                 # the device key: serial, else host name
    label: str                  # "model serial" for people
    model: str | None
    serial: str | None
    adb_server: str | None
    host: str | None
    started: str | None
    end_reason: str | None
    iterations: int | None
    classified: str             # "run" (its classification.json) or "merge" (classified now)
    findings: list[dict] = field(default_factory=list)   # {key, count, severity}
    worst: str | None = None
    gate: str | None = None     # "gate.json" / "gate-junit.xml" when the run was gated
    gate_passed: bool | None = None
    cases: list[Case] = field(default_factory=list)
    iterations_asked: object = None   # its config's iterations (soak.end_reasons.conclude)
    oracle: dict | None = None        # --reference runs: checked, wrong, nonfinite (summary.json's oracle)


def collect(paths: list[str | Path]) -> list[Path]:
    """Run folders from arguments that are run folders or folders of them (each once, in order)."""
    runs: list[Path] = []
    seen: set[Path] = set()
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise BadInput(f"{path} does not exist", "give run folders (logs/<run-id>) or folders of them")
        if not path.is_dir():
            raise BadInput(f"{path} is not a folder", "give run folders (logs/<run-id>) or folders of them")
        found = [path] if is_run_dir(path) else find_runs(path)
        if not found:
            raise BadInput(f"no run folders in {path}",
                           f"a run folder holds {EVENTS}, {MANIFEST} or {run_folder.ENGINE_LOG} (written by `soak run`)")
        for run in found:
            key = run.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(run)
    return runs


def _json(path: Path) -> dict | None:
    """A JSON object file of a run folder (None when missing; BadInput when damaged)."""
    return run_folder.read_json(path)


def _run_end(run_dir: Path) -> dict | None:
    """The run_end event of a run without summary.json (soak.run_folder's event reader;
    None when the log has none, or is missing)."""
    end = None
    try:
        for end in run_folder.read_events(run_dir, kinds={"run_end"}, strict=False):
            pass
    except BadInput:  # no event log (a folder of engine.log only), or unreadable
        return None
    return end


_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


def device_of(manifest: dict) -> dict:
    """{device, label, model, serial, adb_server, host} of a run: the phone from the manifest's
    `device` (or an adb `host` record of older runs), else the machine soak ran on.

    The key is the serial when it names the hardware (USB).  A network serial (`adb connect
    HOST:PORT`) or an emulator's is only unique on its side of the cable: two lab hosts may
    both have a 127.0.0.1:5555 or an emulator-5554, so the key adds where it was reached
    (the remote adb server, else the host soak ran on)."""
    dev = manifest.get("device") if isinstance(manifest.get("device"), dict) else None
    host = manifest.get("host") if isinstance(manifest.get("host"), dict) else {}
    if dev is None and host.get("kind") == "adb":
        dev = host
    ctx = run_context(manifest)
    hostname = (dev or {}).get("runner_host") or host.get("hostname")
    adb_server = ctx["adb_server"] or _str((dev or {}).get("adb_server"))
    if dev is not None and (dev.get("serial") or dev.get("model")):
        serial = _str(dev.get("serial"))
        model = _str(dev.get("model"))
        key = serial or str(model)
        local = serial is not None and (dev.get("connection") == "network" or serial.startswith("emulator-")
                                        or NETWORK_SERIAL.match(serial) is not None)
        if local:
            where = adb_server if adb_server and not adb_server.startswith(_LOOPBACK) else hostname
            key = f"{serial}@{where}" if where else serial
        label = " ".join(x for x in (model, key) if x)
    else:
        serial, model = None, None
        key = label = str(hostname or "unknown host")
    return {"device": key, "label": label, "model": model, "serial": serial, "adb_server": adb_server,
            "host": _str(hostname)}


def _str(v) -> str | None:
    return None if v is None else str(v)


def read_run(run_dir: Path, catalog=None) -> tuple[RunRecord, dict, dict, dict]:
    """A run's record, plus its manifest, classification and summary (for the history)."""
    manifest = run_folder.read_manifest(run_dir) or {}  # a newer major schema: BadInput (exit 3)
    classification = _json(run_dir / CLASSIFICATION)
    classified = "run"
    if classification is None:
        classification = classify_run(run_dir, catalog, write=False)
        classified = "merge"
    summary = _json(run_dir / SUMMARY) or {}
    end_reason = summary.get("end_reason")
    iterations = summary.get("iterations")
    if end_reason is None:
        end = _run_end(run_dir)
        end_reason = (end or {}).get("reason")
        iterations = (end or {}).get("iterations", iterations)
    dev = device_of(manifest)
    labels = gate_labels(run_dir)  # the gate's expected / flake / unexpected (soak gate --expectations)
    findings = [{"key": r["key"], "count": r["count"], "severity": r["severity"] or "medium", "title": r["title"],
                 "known": r["known"], "kind": r.get("kind"), "label": labels.get(r["key"])}
                for r in run_findings(classification)]
    worst = min((f["severity"] for f in findings), key=lambda s: SEVERITY_RANK.get(s, 99), default=None)
    rec = RunRecord(
        run_id=str(manifest.get("run_id") or classification.get("run_id") or run_dir.name), run_dir=str(run_dir),
        device=dev["device"], label=dev["label"], model=dev["model"], serial=dev["serial"],
        adb_server=dev["adb_server"], host=dev["host"], started=_str(manifest.get("started")),
        end_reason=_str(end_reason), iterations=iterations if isinstance(iterations, int) else None,
        classified=classified, findings=findings, worst=worst,
        iterations_asked=(manifest.get("config") or {}).get("iterations"),
        oracle=_oracle_counts(summary))
    rec.cases, rec.gate = _cases(run_dir, rec, findings)
    if rec.gate is not None:
        rec.gate_passed = not any(c.failed for c in rec.cases)
    return rec, manifest, classification, summary


def _oracle_counts(summary: dict) -> dict | None:
    """The teacher-forced turns of a --reference run (summary.json `oracle`, mode check), else None."""
    o = summary.get("oracle")
    if not isinstance(o, dict) or o.get("mode") != "check":
        return None
    return {k: o.get(k) if isinstance(o.get(k), int) and not isinstance(o.get(k), bool) else 0
            for k in ("checked", "wrong", "nonfinite")}


def _oracle_text(o: dict | None) -> str:
    return "–" if o is None else f"{o['checked']} checked, {o['wrong'] + o['nonfinite']} wrong"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "device"


def _classname(rec: RunRecord, section: str) -> str:
    return f"soak.{_slug(rec.model or 'host')}.{_slug(rec.device)}.{section}"


def _cases(run_dir: Path, rec: RunRecord, findings: list[dict]) -> tuple[list[Case], str | None]:
    """The run's test cases: its gate's rules (gate.json, else gate-junit.xml), else one per finding."""
    gate = _json(run_dir / GATE_JSON)
    if gate is not None and isinstance(gate.get("rules"), list):
        cases = []
        for r in gate["rules"]:
            if not isinstance(r, dict):
                continue
            name = str(r.get("name") or "rule")
            cases.append(Case(name, _classname(rec, "gate." + name.split(".", 1)[0]), bool(r.get("passed")),
                              str(r.get("message") or ""), "\n".join(map(str, r.get("details") or [])),
                              skipped=r.get("status") == "skipped" or bool(r.get("skipped"))))
        return cases, GATE_JSON
    junit = run_dir / GATE_JUNIT
    if junit.is_file():
        try:
            root = ET.parse(junit).getroot()
        except (ET.ParseError, OSError) as exc:
            raise BadInput(f"{junit} is unreadable: {exc}", "re-run `soak gate` on that run") from None
        cases = []
        for tc in root.iter("testcase"):
            fail = tc.find("failure")
            if fail is None:
                fail = tc.find("error")
            section = (tc.get("classname") or "soak.gate.rule").rsplit(".", 1)[-1]
            out = tc.find("system-out")
            skip = tc.find("skipped")
            cases.append(Case(tc.get("name") or "rule", _classname(rec, "gate." + section), fail is None,
                              (fail.get("message") if fail is not None else None) or (out.text if out is not None else "") or "",
                              (fail.text if fail is not None else None) or "", skipped=skip is not None))
        return cases, GATE_JUNIT
    cases = []
    ended = conclude(rec.end_reason, rec.iterations, rec.iterations_asked)
    cases.append(Case("run.ended", _classname(rec, "run"), ended.passed, ended.message,
                      f"{rec.iterations if rec.iterations is not None else '?'} iterations"))
    for f in findings:
        fails = f["severity"] in FAILING_SEVERITIES
        cases.append(Case(f["key"], _classname(rec, "finding." + (f.get("kind") or "fault")), not fails,
                          f"[{f['severity']}] x{f['count']}: {f['title'] or f['key']}",
                          f"{'known catalog entry' if f['known'] else 'not in the catalog (signature)'}; "
                          f"severity {f['severity']} {'fails' if fails else 'does not fail'} a run without a gate"))
    return cases, None


# -- the table -------------------------------------------------------------------

class Table:
    """Findings x devices, rolled up one run at a time."""

    def __init__(self):
        self.runs: list[RunRecord] = []
        self.faults: dict[str, dict] = {}
        self.devices: dict[str, dict] = {}

    def add(self, rec: RunRecord) -> None:
        self.runs.append(rec)
        d = self.devices.get(rec.device)
        if d is None:
            d = self.devices[rec.device] = {"device": rec.device, "label": rec.label, "model": rec.model,
                                            "serial": rec.serial, "adb_servers": [], "hosts": [], "runs": 0,
                                            "iterations": 0, "findings": 0, "end_reasons": {}}
        d["runs"] += 1
        d["iterations"] += rec.iterations or 0
        for k, v in (("adb_servers", rec.adb_server), ("hosts", rec.host)):
            if v and v not in d[k]:
                d[k].append(v)
        reason = rec.end_reason or "no run_end"
        d["end_reasons"][reason] = d["end_reasons"].get(reason, 0) + 1
        for f in rec.findings:
            d["findings"] += f["count"]
            row = self.faults.get(f["key"])
            if row is None:
                row = self.faults[f["key"]] = {"fault": f["key"], "known": f["known"], "title": f["title"],
                                               "severity": f["severity"], "kind": f.get("kind"), "runs": 0,
                                               "count": 0, "devices": {}, "run_ids": [], "labels": {}}
            row["runs"] += 1
            if f.get("label"):  # the gates' labels: {expected|flake|unexpected: runs}
                row["labels"][f["label"]] = row["labels"].get(f["label"], 0) + 1
            row["count"] += f["count"]
            row["known"] = row["known"] or f["known"]
            if SEVERITY_RANK.get(f["severity"], 99) < SEVERITY_RANK.get(row["severity"], 99):
                row["severity"] = f["severity"]
            per = row["devices"].setdefault(rec.device, {"count": 0, "runs": 0})
            per["count"] += f["count"]
            per["runs"] += 1
            row["run_ids"].append(rec.run_id)

    def fault_rows(self) -> list[dict]:
        return sorted(self.faults.values(),
                      key=lambda r: (SEVERITY_RANK.get(r["severity"], 99), -len(r["devices"]), -r["count"], r["fault"]))

    def device_rows(self) -> list[dict]:
        return sorted(self.devices.values(), key=lambda d: d["label"])

    def to_json(self) -> dict:
        ends: dict[str, int] = {}
        for r in self.runs:
            ends[r.end_reason or "no run_end"] = ends.get(r.end_reason or "no run_end", 0) + 1
        return {
            "version": FORMAT_VERSION,
            "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "totals": {"runs": len(self.runs), "devices": len(self.devices), "faults": len(self.faults),
                       "iterations": sum(r.iterations or 0 for r in self.runs), "end_reasons": ends,
                       "classified_by_merge": sum(r.classified == "merge" for r in self.runs),
                       "gated": sum(r.gate is not None for r in self.runs),
                       "gate_failed": sum(r.gate_passed is False for r in self.runs),
                       **self.oracle_totals()},
            "faults": self.fault_rows(),
            "devices": self.device_rows(),
            "runs": [{"run_id": r.run_id, "run_dir": r.run_dir, "device": r.device, "label": r.label,
                      "model": r.model, "serial": r.serial, "adb_server": r.adb_server, "host": r.host,
                      "started": r.started, "end_reason": r.end_reason, "iterations": r.iterations,
                      "classified": r.classified, "worst_severity": r.worst, "gate": r.gate,
                      "gate_passed": r.gate_passed, "oracle": r.oracle,
                      "findings": {f["key"]: f["count"] for f in r.findings}} for r in self.runs],
        }

    def oracle_totals(self) -> dict:
        """Checked and wrong turns over the --reference runs (none: {})."""
        checked = [r.oracle for r in self.runs if r.oracle is not None]
        if not checked:
            return {}
        return {"oracle_runs": len(checked), "oracle_checked": sum(o["checked"] for o in checked),
                "oracle_wrong": sum(o["wrong"] + o["nonfinite"] for o in checked)}

    def text(self) -> str:
        from soak.catalog.table import render

        labels = {k: d["label"] for k, d in self.devices.items()}
        head = (f"{len(self.runs)} runs on {len(self.devices)} devices, {len(self.faults)} distinct faults")
        o = self.oracle_totals()
        if o:
            head += (f"; answers checked in {o['oracle_runs']} runs: {o['oracle_checked']} turns, "
                     f"{o['oracle_wrong']} wrong")
        if not self.faults:
            return head + "\nno failures"
        rows = []
        for r in self.fault_rows():
            per = sorted(r["devices"].items(), key=lambda kv: (-kv[1]["count"], labels[kv[0]]))
            rows.append([r["severity"], r["fault"], ("known" if r["known"] else "new") + _labels_text(r["labels"]),
                         r["runs"], r["count"],
                         len(r["devices"]), ", ".join(f"{labels[k]} x{v['count']}" for k, v in per)])
        return head + "\n" + render(["SEVERITY", "FAULT", "STATUS", "RUNS", "COUNT", "DEVICES", "PER DEVICE"], rows)


def _labels_text(labels: dict) -> str:
    """ " (flake ×2)": the gates' labels of a fault, for the table."""
    return f" ({', '.join(f'{k} ×{v}' for k, v in sorted(labels.items()))})" if labels else ""


# -- JUnit -----------------------------------------------------------------------

def junit_tree(runs: list[RunRecord]) -> ET.ElementTree:
    """One <testsuite> per run, written with the gate's JUnit layout (soak.outputs.junit)."""
    total = sum(len(r.cases) for r in runs)
    failed = sum(c.failed for r in runs for c in r.cases)
    skipped = sum(c.skipped for r in runs for c in r.cases)
    root = junit_xml.testsuites("soak merge", total, failed, 0, skipped)
    stamp = junit_xml.now()
    names: set[str] = set()
    for r in runs:
        name = f"{r.run_id} on {r.label}"
        if name in names:  # the same run id on the same device twice (copied folders): still unique
            name = f"{name} ({r.run_dir})"
        names.add(name)
        props = [(k, v) for k, v in (("run_id", r.run_id), ("device", r.device), ("model", r.model),
                                     ("serial", r.serial), ("adb_server", r.adb_server), ("run_dir", r.run_dir),
                                     ("end_reason", r.end_reason), ("source", r.gate or "classification"))
                 if v is not None]
        suite = junit_xml.testsuite(root, name, len(r.cases), sum(c.failed for c in r.cases), 0,
                                sum(c.skipped for c in r.cases), 0.0, stamp, props, hostname=r.host or "")
        for c in r.cases:
            body = "\n".join(x for x in (c.message, c.text) if x)
            junit_xml.testcase(suite, c.classname, c.name, skipped=c.message if c.skipped else None,
                           failure=None if c.passed else c.message, text=body,
                           out=body if c.passed and not c.skipped and body else None)
    ET.indent(root)
    return ET.ElementTree(root)


# -- HTML ------------------------------------------------------------------------

_CSS = ("td.z{color:#ccc;text-align:center} th.v{writing-mode:vertical-rl;transform:rotate(180deg);"
        "white-space:nowrap;font-weight:normal} .wide{overflow-x:auto}")


def render_html(table: Table, out_dir: Path) -> str:
    data_devices = table.device_rows()
    faults = table.fault_rows()
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    ends: dict[str, int] = {}
    for r in table.runs:
        ends[r.end_reason or "no run_end"] = ends.get(r.end_reason or "no run_end", 0) + 1
    title = f"soak merge: {len(table.runs)} runs on {len(data_devices)} devices"
    p = [page_head(title, _CSS) + f"<h1>{_e(title)}</h1>"
         f"<p class=muted>generated {_e(now)} by <code>soak merge</code> from each run's {CLASSIFICATION}; "
         "self-contained, no script, no network.</p>",
         "<table><tbody>"
         f"<tr><th>runs</th><td class=num>{len(table.runs)}</td></tr>"
         f"<tr><th>devices</th><td class=num>{len(data_devices)}</td></tr>"
         f"<tr><th>distinct faults</th><td class=num>{len(faults)}</td></tr>"
         f"<tr><th>iterations</th><td class=num>{sum(r.iterations or 0 for r in table.runs)}</td></tr>"
         "<tr><th>ended by</th><td>" + ", ".join(f"{_e(k)} ×{v}" for k, v in sorted(ends.items())) + "</td></tr>"
         f"<tr><th>gate failed</th><td class=num>{sum(r.gate_passed is False for r in table.runs)} of "
         f"{sum(r.gate is not None for r in table.runs)} gated</td></tr>"
         + ("" if not table.oracle_totals() else
            f"<tr><th>answers checked (oracle)</th><td>{table.oracle_totals()['oracle_checked']} turns in "
            f"{table.oracle_totals()['oracle_runs']} runs, <span class="
            f"{'bad' if table.oracle_totals()['oracle_wrong'] else 'good'}>{table.oracle_totals()['oracle_wrong']} "
            "wrong</span></td></tr>")
         + "</tbody></table>"]
    p.append("<h2>Findings × devices</h2>")
    if not faults:
        p.append("<p class=good>No faults on any device.</p>")
    else:
        p.append("<div class=wide><table><thead><tr><th>severity</th><th>fault</th><th>title</th><th>runs</th>"
                 "<th>count</th>" + "".join(f"<th class=v title='{_e(d['label'])}'>{_e(d['label'])}</th>"
                                             for d in data_devices) + "</tr></thead><tbody>")
        for f in faults:
            cells = []
            for d in data_devices:
                per = f["devices"].get(d["device"])
                cells.append(f"<td class=num title='{per['runs']} run(s)'>{per['count']}</td>" if per
                             else "<td class=z>·</td>")
            sev = f["severity"]
            p.append(f"<tr><td><span class='sev-{_e(sev)}'>{_e(sev)}</span></td><td><code>{_e(f['fault'])}</code>"
                     f"{'' if f['known'] else ' <span class=muted>(new)</span>'}"
                     + "".join(f" <span class='label label-{_e(k)}'>{_e(k)} ×{v}</span>" for k, v in sorted(f["labels"].items()))
                     + f"</td><td>{_e(f['title'])}</td>"
                     f"<td class=num>{f['runs']}</td><td class=num>{f['count']}</td>{''.join(cells)}</tr>")
        p.append("</tbody></table></div>")
    p.append("<h2>Devices</h2><table><thead><tr><th>device</th><th>model</th><th>serial</th><th>adb server</th>"
             "<th>runner host</th><th>runs</th><th>iterations</th><th>fault events</th><th>ended by</th>"
             "</tr></thead><tbody>")
    for d in data_devices:
        p.append(f"<tr><td>{_e(d['label'])}</td><td>{_e(d['model'])}</td><td>{_e(d['serial'])}</td>"
                 f"<td>{_e(', '.join(d['adb_servers']))}</td><td>{_e(', '.join(d['hosts']))}</td>"
                 f"<td class=num>{d['runs']}</td><td class=num>{d['iterations']}</td><td class=num>{d['findings']}</td>"
                 f"<td>{_e(', '.join(f'{k} ×{v}' for k, v in sorted(d['end_reasons'].items())))}</td></tr>")
    p.append("</tbody></table>")
    p.append("<h2>Runs</h2><table><thead><tr><th>run</th><th>device</th><th>started</th><th>ended by</th>"
             "<th>iterations</th><th>answers (oracle)</th><th>worst</th><th>findings</th><th>gate</th>"
             "</tr></thead><tbody>")
    for r in table.runs:
        href = _href(out_dir, Path(r.run_dir))
        cls = "bad" if not conclude(r.end_reason, r.iterations, r.iterations_asked).passed else ""
        gate = "–" if r.gate is None else ("<span class=good>pass</span>" if r.gate_passed else "<span class=bad>FAIL</span>")
        found = ", ".join(f"{_e(f['key'])} ×{f['count']}" for f in r.findings[:4]) + (" …" if len(r.findings) > 4 else "")
        p.append(f"<tr><td><a href='{_e(href)}/'>{_e(r.run_id)}</a> <a class=muted href='{_e(href)}/{CLASSIFICATION}'>"
                 f"json</a></td><td>{_e(r.label)}</td><td>{_e((r.started or '')[:19])}</td>"
                 f"<td class='{cls}'>{_e(r.end_reason or 'no run_end')}</td><td class=num>{_e(r.iterations)}</td>"
                 f"<td class='{'bad' if r.oracle and r.oracle['wrong'] + r.oracle['nonfinite'] else ''}'>"
                 f"{_e(_oracle_text(r.oracle))}</td>"
                 f"<td>{_e(r.worst or '–')}</td><td>{found or '<span class=good>none</span>'}</td><td>{gate}</td></tr>")
    p.append("</tbody></table></body></html>")
    return "\n".join(p)


def _href(out_dir: Path, run_dir: Path) -> str:
    try:
        rel = os.path.relpath(run_dir.resolve(), out_dir.resolve())
    except ValueError:  # another drive
        rel = str(run_dir.resolve())
    return "/".join(rel.split(os.sep))


# -- the whole merge -------------------------------------------------------------

@dataclass
class MergeResult:
    table: Table
    out_dir: Path
    history_added: int = 0


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}", "give a writable folder with -o DIR") from None


def merge(paths: list[str | Path], out_dir: str | Path, catalog=None, history_db: str | Path | None = None) -> MergeResult:
    runs = collect(paths)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is not a folder", "give a folder to -o (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {out}: {exc.strerror or exc}", "give a writable folder with -o DIR") from None
    conn = None
    if history_db is not None:
        from soak import history

        conn = history.connect(history_db)
    table = Table()
    added = 0
    try:
        for run_dir in runs:
            rec, manifest, classification, summary = read_run(run_dir, catalog)
            table.add(rec)
            if conn is not None:
                from soak import history

                history.add_run(conn, run_dir, manifest, classification, summary)
                added += 1
    finally:
        if conn is not None:
            conn.close()
    _write_text(out / TABLE_NAME, json.dumps(table.to_json(), indent=1, ensure_ascii=False, default=str) + "\n")
    _write_text(out / REPORT_NAME, render_html(table, out))
    junit_xml.write_tree(junit_tree(table.runs), out / JUNIT_NAME)
    return MergeResult(table, out, added)

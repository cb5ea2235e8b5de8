"""Real runs as test data (issue 11): every case under tests/data/real/ is
classified and compared with the verdict in its expected.yaml, as syzkaller's
pkg/report/testdata does.  A case is a trimmed run folder (events.jsonl,
engine.log, manifest.json, ...; see tools/trim_run.py) or a raw engine log
(`log.txt`: llm_demo output, logcat, bugreport).

A run folder is judged afresh from its events, as `soak run` judges at its end:
soak.analysis computes verdicts.json in a copy of the case, and the classifier
reads that one, so a change in the verdict code reaches this test.  The case's
own verdicts.json is what was recorded: only the "before" of the update.

    SOAK_UPDATE_EXPECTED=1 python3 -m pytest tests/catalog/test_real_corpus.py

rewrites expected.yaml from what soak now says (keeping each file's `source`
text) and refreshes each case's recorded verdicts.json, warning what changed
from the recorded one; review the diff before committing it."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from soak.analysis import memory_verdict, perf
from soak.analysis import verdicts as analysis_verdicts
from soak.catalog.classify import classify_log, classify_run
from soak.catalog.loader import load_catalog
from soak.run_folder import read_events

ROOT = Path(__file__).resolve().parents[1] / "data" / "real"
CASES = sorted(p for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []
UPDATE = os.environ.get("SOAK_UPDATE_EXPECTED") == "1"
HEADER = """\
# Expected verdict of `soak classify` on this case (tests/catalog/test_real_corpus.py).
# rows: root-cause rows; row1: the first row (catalog id, else signature); new: causes no
# entry knows and no test injected; benign: findings set aside as benign probes;
# verdicts: soak.analysis's verdicts, judged afresh from the events (memory: each series').
# SOAK_UPDATE_EXPECTED=1 rewrites everything but `source`.
"""


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def verdict(result: dict) -> dict:
    causes = result["causes"]
    return {
        "rows": len(causes),
        "row1": (causes[0]["fault_id"] or causes[0]["signature_text"]) if causes else None,
        "row1_injected": bool(causes and causes[0]["injected"]),
        "new": result["summary"]["new"],
        "benign": result["summary"]["benign"],
        "causes": [f"{c['fault_id'] or c['signature_text']} | {'+'.join(c['kinds'])} | {c['phase'] or '-'}"
                   + (f" | cascade {c['cascade_count']}" if c["cascade"] else "") for c in causes],
    }


VERDICTS = "verdicts.json"  # written by soak.analysis, read by the classifier


def judge(case: Path, catalog, work: Path) -> tuple[dict, dict | None]:
    """What soak says of a case today: (its classification, the verdicts it was judged with).
    A run folder is copied under `work` and its verdicts computed there from the events, never
    taken from the recorded verdicts.json; a raw log has no verdicts."""
    log = case / "log.txt"
    if log.is_file():
        return classify_log(log, catalog), None
    run = work / case.name
    shutil.copytree(case, run)
    (run / VERDICTS).unlink(missing_ok=True)
    fresh = analysis_verdicts.compute_verdicts(run)  # writes the copy's verdicts.json
    return classify_run(run, catalog, write=False), fresh


def judged(verdicts: dict | None) -> dict | None:
    """The part of the verdicts a case's expected.yaml pins."""
    if verdicts is None:
        return None
    overall = verdicts.get("overall") or {}
    series = (verdicts.get("memory") or {}).get("series") or {}
    out = {"memory": {name: s.get("verdict") for name, s in sorted(series.items())},
           "leak": overall.get("leak"), "recovery_rate": overall.get("recovery_rate"),
           "perf_degrading": sorted(overall.get("perf_degrading") or [])}
    oracle = verdicts.get("oracle")
    if oracle:  # a run checked against a reference (issue 23)
        out["oracle"] = {"checked": oracle.get("checked"), "wrong": oracle.get("wrong"),
                         "nonfinite": oracle.get("nonfinite"),
                         "first_wrong_iteration": oracle.get("first_wrong_iteration"),
                         "first_nonfinite_iteration": oracle.get("first_nonfinite_iteration"),
                         "drift": (oracle.get("drift") or {}).get("verdict")}
    return out


def differences(before: dict, after: dict, prefix: str = "") -> list[str]:
    """`key: before -> after` for each leaf that changed."""
    out = []
    for key in sorted(set(before) | set(after), key=str):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _source_text(path: Path) -> str:
    """The `source:` entry of an expected.yaml as written (its continuation lines too), so an
    update leaves it byte for byte."""
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    start = next((k for k, line in enumerate(lines) if line.startswith("source:")), None)
    if start is None:
        return ""
    end = next((k for k in range(start + 1, len(lines)) if not lines[k].startswith((" ", "\t"))), len(lines))
    return "".join(lines[start:end])


def compare(case: Path, catalog, work: Path) -> list[str]:
    """How today's judgement of `case` differs from its expected.yaml (empty: it matches);
    with SOAK_UPDATE_EXPECTED=1, rewrite expected.yaml and the recorded verdicts.json instead."""
    result, fresh = judge(case, catalog, work)
    got = verdict(result)
    if fresh is not None:
        got["verdicts"] = judged(fresh)
    path = case / "expected.yaml"
    expected = yaml.safe_load(path.read_text()) if path.is_file() else {}
    if UPDATE:
        source = _source_text(path) or yaml.safe_dump({"source": "TODO: where this run comes from"}, width=120)
        path.write_text(HEADER + source + yaml.safe_dump(got, sort_keys=False, allow_unicode=True, width=120))
        if fresh is not None:
            recorded = case / VERDICTS
            before = json.loads(recorded.read_text()) if recorded.is_file() else {}
            changed = differences(judged(before) or {}, got["verdicts"])
            if changed:
                warnings.warn(f"{case.name}: verdicts changed from the recorded verdicts.json: {'; '.join(changed)}")
            shutil.copyfile(work / case.name / VERDICTS, recorded)
        return []
    assert expected, f"{path} missing: run with SOAK_UPDATE_EXPECTED=1 and review it"
    return differences({k: expected.get(k) for k in got}, got)


def test_corpus_is_small():
    for case in CASES:
        size = sum(p.stat().st_size for p in case.rglob("*") if p.is_file())
        assert size < 200 * 1024, f"{case.name}: {size} bytes; trim it (tools/trim_run.py)"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_real_case_matches_expected(case, catalog, tmp_path):
    assert compare(case, catalog, tmp_path) == []


def test_a_change_in_the_verdict_code_reaches_the_corpus(catalog, tmp_path, monkeypatch):
    """The corpus is judged afresh: a memory verdict that calls every judged series a leak changes
    both the pinned verdicts and the classification (a memory-growth row), while the case's
    recorded verdicts.json stays as it was (read as the verdicts, it hid such a change)."""
    case = ROOT / "nv-clean"
    recorded = (case / VERDICTS).read_bytes()
    assert compare(case, catalog, tmp_path / "today") == []
    real = memory_verdict.series_verdict

    def every_series_leaks(*args, **kwargs):
        out = real(*args, **kwargs)
        if out.get("verdict") not in (None, "no_data", "insufficient"):
            out["verdict"] = "leak"
        return out

    monkeypatch.setattr(memory_verdict, "series_verdict", every_series_leaks)
    changed = compare(case, catalog, tmp_path / "changed")
    assert "verdicts.leak: False -> True" in changed, changed
    assert any(line.startswith("verdicts.memory.rss: ") and line.endswith("-> 'leak'") for line in changed), changed
    assert any(line.startswith("causes:") and "memory_growth" in line for line in changed), changed
    assert (case / VERDICTS).read_bytes() == recorded


def test_a_change_in_a_verdict_no_finding_reads_reaches_the_corpus(catalog, tmp_path, monkeypatch):
    """Speed drift makes no catalog finding, so only the pinned verdicts can see it change."""
    real = perf.drift

    def decode_degrades(run, metric, *args, **kwargs):
        out = real(run, metric, *args, **kwargs)
        if metric == "decode_tps":
            out["verdict"] = "degrading"
        return out

    monkeypatch.setattr(perf, "drift", decode_degrades)
    assert compare(ROOT / "nv-clean", catalog, tmp_path) == ["verdicts.perf_degrading: [] -> ['decode_tps']"]


@pytest.mark.parametrize("case", ["nv-alloc-load", "nv-alloc-forward", "nv-enqueue-persistent",
                                  "nv-enqueue-transient", "nv-memlimit",
                                  "pocl-alloc-load", "pocl-enqueue-transient"])
def test_one_injected_fault_is_one_row_first(case, catalog, tmp_path):
    """Issue 11, done when: on real MNN (H200 and PoCL), one injected fault
    gives one root-cause row, first, with its cascade folded in."""
    if not (ROOT / case).is_dir():
        pytest.skip(f"{case} not in tests/data/real")
    result, _ = judge(ROOT / case, catalog, tmp_path)
    # memory verdicts (judged afresh) may add a memory_kept row after it: pinned in expected.yaml
    (row,) = [c for c in result["causes"] if c["kind"] != "memory_kept"]
    assert row is result["causes"][0] and row["injected"] and row["kind"] == "cl_call_error"
    assert result["summary"]["new"] == 0
    assert sum(1 for d in result["findings"] if d["role"] == "cascade") >= 1


def test_h200_clean_run_has_no_new_finding(catalog, tmp_path):
    """No fault; the one cause is memory kept after reset that follows the longest context (the
    memory verdict's ratchet, which `soak gate` reports on this run too: issue 22)."""
    result, _ = judge(ROOT / "nv-clean", catalog, tmp_path)
    assert [c["fault_id"] for c in result["causes"]] == ["soak-memory-ratchet"] and result["summary"]["new"] == 0
    (probe,) = result["benign"]
    assert probe["param_name"] == "CL_DEVICE_HALF_FP_CONFIG" and probe["entry"] == "soak-benign-nvidia-device-info-probes"


@pytest.mark.parametrize("case, kind, first", [("h100-oracle-setarg-decode", "wrong_output", 1),
                                               ("h100-oracle-corrupt-write", "nonfinite_logits", 16),
                                               ("pocl-oracle-skip-corrupt", "wrong_output", 5)])
def test_a_wrong_answer_on_real_mnn_is_in_the_cascade_of_its_injected_cause(case, kind, first, catalog, tmp_path):
    """Issue 23, done when: on real MNN (H100, PoCL) an injected silent fault or setArg -49 is the root cause,
    with the wrong answer the oracle found at the turn it landed in folded into its cascade."""
    result, fresh = judge(ROOT / case, catalog, tmp_path)
    injected = [c for c in result["causes"] if c["injected"]]
    owners = [c for c in injected if kind in {sub.get("kind") for sub in c.get("cascade") or []}]
    assert owners and owners[0] is result["causes"][0], result["causes"]
    faults = [e for e in read_events(tmp_path / case, kinds={"fault"}) if e["kind"] == kind]
    assert faults and faults[0]["iteration"] == first
    assert result["summary"]["new"] == 0


def test_a_clean_real_opencl_run_checked_against_its_cpu_reference_has_no_wrong_turn(catalog, tmp_path):
    result, fresh = judge(ROOT / "h100-oracle-clean", catalog, tmp_path)
    assert fresh["oracle"]["checked"] >= 100 and fresh["oracle"]["wrong"] == fresh["oracle"]["nonfinite"] == 0
    assert fresh["oracle"]["drift"]["verdict"] == "stable" and result["causes"] == []

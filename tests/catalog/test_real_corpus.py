"""Real runs as test data (issue 11): every case under tests/data/real/ is
classified and compared with the verdict in its expected.yaml, as syzkaller's
pkg/report/testdata does.  A case is a trimmed run folder (events.jsonl,
engine.log, manifest.json, ...; see tools/trim_run.py) or a raw engine log
(`log.txt`: llm_demo output, logcat, bugreport).

    SOAK_UPDATE_EXPECTED=1 python3 -m pytest tests/catalog/test_real_corpus.py

rewrites the verdicts from what soak now says (keeping each file's `source`
text); review the diff before committing it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from soak.catalog.classify import classify_log, classify_run
from soak.catalog.loader import load_catalog

ROOT = Path(__file__).resolve().parents[1] / "data" / "real"
CASES = sorted(p for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []
UPDATE = os.environ.get("SOAK_UPDATE_EXPECTED") == "1"
HEADER = """\
# Expected verdict of `soak classify` on this case (tests/catalog/test_real_corpus.py).
# rows: root-cause rows; row1: the first row (catalog id, else signature); new: causes no
# entry knows and no test injected; benign: findings set aside as benign probes.
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


def test_corpus_is_small():
    for case in CASES:
        size = sum(p.stat().st_size for p in case.rglob("*") if p.is_file())
        assert size < 200 * 1024, f"{case.name}: {size} bytes; trim it (tools/trim_run.py)"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_real_case_matches_expected(case, catalog):
    log = case / "log.txt"
    result = classify_log(log, catalog) if log.is_file() else classify_run(case, catalog, write=False)
    got = verdict(result)
    path = case / "expected.yaml"
    expected = yaml.safe_load(path.read_text()) if path.is_file() else {}
    if UPDATE:
        out = {"source": expected.get("source", "TODO: where this run comes from"), **got}
        path.write_text(HEADER + yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=120))
        return
    assert expected, f"{path} missing: run with SOAK_UPDATE_EXPECTED=1 and review it"
    assert {k: expected.get(k) for k in got} == got


@pytest.mark.parametrize("case", ["nv-alloc-load", "nv-alloc-forward", "nv-enqueue-persistent",
                                  "nv-enqueue-transient", "nv-memlimit",
                                  "pocl-alloc-load", "pocl-enqueue-transient"])
def test_one_injected_fault_is_one_row_first(case, catalog):
    """Issue 11, done when: on real MNN (H200 and PoCL), one injected fault
    gives one root-cause row, first, with its cascade folded in."""
    if not (ROOT / case).is_dir():
        pytest.skip(f"{case} not in tests/data/real")
    result = classify_run(ROOT / case, catalog, write=False)
    (row,) = result["causes"]
    assert row["injected"] and row["kind"] == "cl_call_error"
    assert result["summary"]["new"] == 0
    assert sum(1 for d in result["findings"] if d["role"] == "cascade") >= 1


def test_h200_clean_run_has_no_new_finding(catalog):
    """No fault; the one cause is memory kept after reset that follows the longest context (the
    memory verdict's ratchet, which `soak gate` reports on this run too: issue 22)."""
    result = classify_run(ROOT / "nv-clean", catalog, write=False)
    assert [c["fault_id"] for c in result["causes"]] == ["soak-memory-ratchet"] and result["summary"]["new"] == 0
    (probe,) = result["benign"]
    assert probe["param_name"] == "CL_DEVICE_HALF_FP_CONFIG" and probe["entry"] == "soak-benign-nvidia-device-info-probes"

"""Memory kept after reset becomes a finding (issue 12 follow-up): a `ratchet` or `retained` memory verdict
in verdicts.json is a memory_kept finding that the catalog names, a `leak` stays memory_growth.

End to end from data: the recorded real H200 series (tests/data/series/, MNN 3.6.1 OpenCL, 60-turn
conversations) and the workload shapes of tests/outputs/_shapes.py are analysed (verdicts.json written),
then classified."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from soak.analysis.verdicts import compute_verdicts
from soak.catalog.classify import classify_run
from soak.catalog.loader import load_catalog

OUTPUTS = Path(__file__).resolve().parents[1] / "outputs"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"soak_catalog_tests_{name}", OUTPUTS / f"_{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _findings(run, catalog, kind):
    compute_verdicts(run)
    result = classify_run(run, catalog, write=False)
    return result, {d["signature_text"]: d for d in result["findings"] if d["kind"] == kind}


def test_h200_gpu_ratchet_is_a_known_finding(tmp_path, catalog):
    """Before: GPU bytes judged `leak` and classified soak-gpu-memory-leak.  The GPU pool stepped up at ~5.8k
    tokens of context and kept it; host memory followed the longest context linearly: both ratchets."""
    run = _load("series").rebuild("h200-opencl-60turn", tmp_path / "h200")
    result, kept = _findings(run, catalog, "memory_kept")
    assert set(kept) == {"memory_kept/reset: gpu", "memory_kept/reset: host"}
    gpu = kept["memory_kept/reset: gpu"]
    assert gpu["fault_id"] == "soak-memory-ratchet"
    assert gpu["figures"]["verdict"] == "ratchet" and gpu["figures"]["steps_at_tokens"][0] == 5780
    assert gpu["figures"]["kept_bytes"] > 1e9
    host = kept["memory_kept/reset: host"]
    assert host["fault_id"] == "soak-memory-ratchet" and host["figures"]["kv_ratio"] > 1.5
    assert not [d for d in result["findings"] if d["kind"] == "memory_growth"]
    assert result["causes"][0]["fault_id"] == "soak-memory-ratchet"


def test_retained_step_is_a_known_finding(tmp_path, catalog):
    run = _load("shapes").write_shape(tmp_path / "step", "step", seed=6001, step_fraction=0.3)
    _result, kept = _findings(run, catalog, "memory_kept")
    (d,) = kept.values()
    assert d["fault_id"] == "soak-memory-retained" and d["figures"]["verdict"] == "retained"
    assert d["figures"]["kept_fraction"] >= 0.2


def test_leak_stays_memory_growth(tmp_path, catalog):
    run = _load("shapes").write_shape(tmp_path / "leak", "leak", seed=3, leak_per_iteration=200e3)
    result, kept = _findings(run, catalog, "memory_kept")
    assert not kept
    (d,) = [d for d in result["findings"] if d["kind"] == "memory_growth"]
    assert d["fault_id"] == "soak-host-memory-leak"

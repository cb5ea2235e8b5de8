"""Real MNN (pip MNN 3.6.1, the [test] extra): its own log lines, captured
from its stdout the way soak's supervisor captures fd 1, classified."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


from soak.catalog.classify import classify_run
from soak.catalog.loader import load_catalog

from _catalog_runs import ctx, make_run

TINY = Path(__file__).resolve().parents[2] / "soak" / "models" / "qwen2-tiny"

DRIVE = """
import json, os, sys
import MNN.llm as llm
m = llm.create(sys.argv[1])
ok = m.load()
if ok is not False and "--respond" in sys.argv:
    m.response("hello", False)
"""


def _mnn_log(tmp_path: Path, name: str, config_changes: dict, drop: str | None = None) -> str:
    model = tmp_path / f"model-{name}"
    shutil.copytree(TINY, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(config_changes)
    (model / "config.json").write_text(json.dumps(cfg))
    if drop:
        (model / drop).unlink()
    proc = subprocess.run([sys.executable, "-c", DRIVE, str(model / "config.json"), "--respond"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def test_real_silent_cpu_fallback(tmp_path):
    """MNN built without OpenCL, asked for opencl: the real fallback line (research §6 M1)."""
    log = _mnn_log(tmp_path, "ocl", {"backend_type": "opencl", "thread_num": 68})
    assert "Can't Find type=3 backend, use 0 instead" in log
    run = make_run(tmp_path, "raw", None, None, engine_log=log)
    result = classify_run(run, load_catalog())
    kinds = {d["kind"]: d for d in result["findings"]}
    assert kinds["cpu_fallback"]["fault_id"] == "soak-cpu-fallback"
    assert set(kinds) == {"cpu_fallback"}  # `Load Cache file error.` on a first run is no fault


def test_real_missing_weights_signature_is_stable(tmp_path):
    sigs = []
    for n in range(2):
        log = _mnn_log(tmp_path, f"w{n}", {}, drop="llm.mnn.weight")
        assert "not found:" in log
        run = make_run(tmp_path, f"run{n}", ctx(backend="cpu", backend_actual="cpu"), None, engine_log=log)
        result = classify_run(run, load_catalog())
        (d,) = [d for d in result["findings"] if "not found" in d["signature_text"]]
        assert d["fault_id"] == "soak-model-file-missing"
        # the respond after the failed load is refused: real MNN says `LLM in error state. Status: -1`
        refused = [d for d in result["findings"] if "error state" in d["signature_text"]]
        assert refused and refused[0]["signature_text"].endswith("Status: NOT_LOADED")
        sigs.append((d["signature"], d["signature_text"]))
    assert sigs[0] == sigs[1]  # two different temporary model folders, one signature
    assert "llm.mnn.weight" in sigs[0][1] and "/tmp" not in sigs[0][1]

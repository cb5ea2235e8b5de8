"""soak compare --gpu-modes: MNN's OpenCL thread_num bits per mode, the sweep's variants, and a
real sweep through the test engine (its own kernel cache per setting, a warm-load run each)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from soak.commands import compare
from soak.errors import BadInput


def test_gpu_mode_bits():
    assert compare.gpu_mode_bits("wide") == 4 + 64  # buffer unless image is asked for
    assert compare.gpu_mode_bits("normal+image") == 8 + 128
    assert compare.gpu_mode_bits("fast+record") == 16 + 64 + 256
    assert compare.gpu_mode_bits("none+buffer+record-batch") == 1 + 64 + 512
    for bad in ("fast+normal", "image", "fast+buffer+image", "turbo", ""):
        with pytest.raises(BadInput):
            compare.gpu_mode_bits(bad)


def _args(**kw) -> argparse.Namespace:
    base = dict(backends=None, thread_nums=None, precisions=None, memories=None, gpu_modes=None,
                gpu_precisions=None, gpu_memories=None, warm_load=False, backend=None)
    return argparse.Namespace(**{**base, **kw})


def test_sweep_variants_cross_modes_precisions_memories():
    vs = compare.plan_variants(_args(backends="cpu", gpu_modes="none,fast", gpu_precisions="low,high",
                                     gpu_memories="low"))
    assert [v["label"] for v in vs] == ["cpu", "cl-none-plow-mlow", "cl-none-phigh-mlow", "cl-fast-plow-mlow",
                                        "cl-fast-phigh-mlow"]
    assert [v["thread_num"] for v in vs[1:]] == [65, 65, 80, 80] and all(v["memory"] == "low" for v in vs[1:])
    with pytest.raises(BadInput, match="go with --gpu-modes"):
        compare.plan_variants(_args(backends="cpu,opencl", warm_load=True))
    with pytest.raises(BadInput, match="at least two"):
        compare.plan_variants(_args(gpu_modes="fast"))


def test_sweep_runs_and_tabulates(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "soak", "compare", "--engine", "test", "--gpu-modes",
                           "none,fast,normal+image", "--warm-load", "--iterations", "3", "--max-new-tokens", "8",
                           "--seed", "1", "--out", str(tmp_path), "--run-id", "sw"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "sw" / "compare.json").read_text())
    rows = {r["label"]: r for r in result["runs"]}
    assert set(rows) == {"cl-none", "cl-fast", "cl-normal-image"}
    assert rows["cl-normal-image"]["thread_num"] == 136
    for r in rows.values():
        assert r["iterations"] == 3 and r["decode_tps"]["n"] == 3 and r["warm_load_s"] is not None
        assert r["cl_call_errors"] == 0
    # each setting loaded on its own cache folder, as the engine was told
    for label in rows:
        cfg = json.loads((tmp_path / "sw" / label / "manifest.json").read_text())
        assert str(tmp_path / "sw" / "cache" / label) in json.dumps(cfg)
    # the tables are people text: on stderr (stdout is for --json)
    assert "load cold s" in proc.stderr and "1st iter cold/warm s" in proc.stderr and "cl-normal-image  136" in proc.stderr
    assert all(r["first_iteration_s"] and r["warm_first_iteration_s"] for r in rows.values())

"""Real model sizes (issue 25): the corpus cases recorded with the Qwen2-0.5B and Qwen2.5-1.5B
shapes (tools/make_qwen2_model.py --preset) carry the parameter count and the KV bytes per
token into the catalog's run context, and the catalog's `model_params` ranges select on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from soak.catalog._context import check_applies, load_context
from soak.catalog.loader import load_catalog

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
# published: Qwen2-0.5B 0.49B parameters, Qwen2.5-1.5B 1.54B (model cards); KV per token at
# fp16 = 2 x layers x KV heads x head dim x 2 bytes: 2*24*2*64*2 and 2*28*2*128*2
# pip MNN on x86 keeps the KV cache in fp32, MNN OpenCL (precision low) in fp16
SIZES = {
    "pip-qwen2-0.5b": {"params": 494_032_768, "backend": "cpu", "kv": 24_576, "dtype": "fp32"},
    "pip-qwen2.5-1.5b": {"params": 1_543_714_304, "backend": "cpu", "kv": 57_344, "dtype": "fp32"},
    "pocl-qwen2-0.5b": {"params": 494_032_768, "backend": "opencl", "kv": 12_288, "dtype": "fp16"},
    "pocl-qwen2.5-1.5b": {"params": 1_543_714_304, "backend": "opencl", "kv": 28_672, "dtype": "fp16"},
    "h100-qwen2-0.5b": {"params": 494_032_768, "backend": "opencl", "kv": 12_288, "dtype": "fp16"},
    "h100-memlimit-qwen2.5-1.5b": {"params": 1_543_714_304, "backend": "opencl", "kv": 28_672, "dtype": "fp16"},
}


@pytest.fixture(scope="module")
def entries():
    cat = load_catalog()
    return [e for e in getattr(cat, "entries", cat)
            if e.applies_to is not None and e.applies_to.model_params is not None]


@pytest.mark.parametrize("case", sorted(SIZES))
def test_real_size_manifest_gives_params_and_kv(case):
    ctx = load_context(REAL / case)
    want = SIZES[case]
    assert ctx.model_params == want["params"]
    assert ctx.backend_actual == want["backend"]
    assert (ctx.kv_bytes_per_token, ctx.kv_dtype) == (want["kv"], want["dtype"])
    assert ctx.to_json()["model_params_human"] in ("494M", "1.54B")


@pytest.mark.parametrize("case", sorted(SIZES))
def test_model_params_ranges_select_on_real_sizes(case, entries):
    ctx = load_context(REAL / case)
    assert len(entries) >= 10
    for e in entries:
        lo, hi = e.applies_to.model_params
        fits, bad, unknown = check_applies(e.applies_to, ctx)
        inside = (lo is None or ctx.model_params >= lo) and (hi is None or ctx.model_params <= hi)
        assert "model_params" not in unknown, e.id
        assert any(f.startswith("model_params ") for f in fits) == inside, (e.id, fits, bad)
        assert any(b.startswith("model_params is ") for b in bad) == (not inside), (e.id, fits, bad)


def test_named_ranges(entries):
    by_id = {e.id: e for e in entries}
    small, mid = (load_context(REAL / c) for c in ("pocl-qwen2-0.5b", "pip-qwen2.5-1.5b"))

    def fits(entry_id, ctx):
        return not any(b.startswith("model_params") for b in check_applies(by_id[entry_id].applies_to, ctx)[1])

    # 0.4B..0.8B (Mali-G720 prefill page fault): the 0.5B shape, not the 1.5B one
    assert fits("mnn-4498-mali-g720-prefill-page-fault", small)
    assert not fits("mnn-4498-mali-g720-prefill-page-fault", mid)
    # 1.2B..2B (Qwen2-1.5B decode crash): the 1.5B shape only
    assert fits("mnn-3502-qwen2-1.5b-decode-crash", mid)
    assert not fits("mnn-3502-qwen2-1.5b-decode-crash", small)
    # 3.5B..8.5B (MNN#3560) and 1.5B..4B VL (MNN#3370): neither / the 1.5B one
    assert not fits("mnn-3560-dimensity8100-fp16-garbage", small)
    assert not fits("mnn-3560-dimensity8100-fp16-garbage", mid)
    assert fits("mnn-3370-vl-exclamation-second-run", mid)
    assert not fits("mnn-3370-vl-exclamation-second-run", small)

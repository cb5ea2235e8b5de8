"""native/oracle against a plain numpy statement of the same definitions (soak_oracle.h)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from soak.oracle import native
from soak.oracle.native import RefStep


@pytest.fixture(scope="module")
def lib():
    return native.load()


def np_topk(x: np.ndarray, k: int, token=None) -> RefStep:
    x64 = x.astype(np.float64)
    lse = float(np.logaddexp.reduce(x64))
    order = np.argsort(-x64, kind="stable")[:k]
    return RefStep(tuple(int(i) for i in order), tuple(float(x64[i] - lse) for i in order), lse,
                   int(order[0]) if token is None else token)


def np_compare(x: np.ndarray, ref: RefStep) -> dict:
    x64 = x.astype(np.float64)
    bad = np.isnan(x64) | (x64 == np.inf)
    fin = x64[~bad & np.isfinite(x64)]
    lse = float(np.logaddexp.reduce(fin))
    lp = np.where(bad, np.nan, x64 - lse)
    k = len(ref.ids)
    cand_order = [i for i in np.argsort(-np.where(bad, -np.inf, x64), kind="stable")[:k] if not bad[i]]
    ref_lp = np.array(ref.logprobs, dtype=np.float64)
    cand_lp = lp[list(ref.ids)]
    a, b = ref_lp - ref_lp.mean(), cand_lp - cand_lp.mean()
    nmse = float(((a - b) ** 2).sum() / max((a * a).sum(), 1e-30))
    union = list(ref.ids) + [i for i in cand_order if i not in ref.ids]
    pref = np.array([math.exp(ref.logprobs[ref.ids.index(i)]) if i in ref.ids else math.exp(ref.logprobs[-1])
                     for i in union])
    pc = np.array([0.0 if bad[i] else math.exp(lp[i]) for i in union])
    pref = np.append(pref, max(1 - pref.sum(), 0.0))
    pc = np.append(pc, max(1 - pc.sum(), 0.0))
    p, q = pref / pref.sum(), pc / pc.sum()
    kl = float(sum(pi * math.log(pi / max(qi, 1e-12)) for pi, qi in zip(p, q) if pi > 1e-12))
    tv = x64[ref.token]
    return {"argmax": int(cand_order[0]), "nonfinite": int(bad.sum()), "kl": max(kl, 0.0), "nmse": nmse,
            "max_abs": float(np.abs(cand_lp - ref_lp).max()),
            "ref_rank": int((x64 > tv).sum()), "ref_logprob": float(tv - lse)}


logit_arrays = st.builds(
    lambda n, seed, scale: (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32),
    st.integers(16, 3000), st.integers(0, 2**32 - 1), st.sampled_from([0.5, 2.0, 8.0]))


@settings(max_examples=60)
@given(x=logit_arrays, k=st.integers(1, 16), noise=st.sampled_from([0.0, 0.01, 0.3, 3.0]), seed=st.integers(0, 99))
def test_compare_matches_the_numpy_definitions(lib, x, k, noise, seed):
    k = min(k, len(x))
    ref = lib.topk(x, k)
    want = np_topk(x, k)
    assert ref.ids == want.ids
    assert ref.lse == pytest.approx(want.lse, abs=1e-5)
    assert ref.logprobs == pytest.approx(want.logprobs, abs=1e-5)
    y = (x + np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32) * noise).astype(np.float32)
    got = lib.compare(y, ref)
    exp = np_compare(y, ref)
    assert got.argmax == exp["argmax"]
    assert got.agree == (exp["argmax"] == ref.token)
    assert got.ref_rank == exp["ref_rank"]
    assert got.nonfinite == 0
    assert got.kl == pytest.approx(exp["kl"], rel=1e-3, abs=1e-6)
    assert got.nmse == pytest.approx(exp["nmse"], rel=1e-3, abs=1e-6)
    assert got.max_abs == pytest.approx(exp["max_abs"], rel=1e-4, abs=1e-5)
    assert got.ref_logprob == pytest.approx(exp["ref_logprob"], abs=1e-4)


def test_identical_logits_are_exact_and_noise_grows_every_measure(lib):
    x = (np.random.default_rng(3).standard_normal(151936) * 3).astype(np.float32)
    ref = lib.topk(x, 10)
    same = lib.compare(x, ref)
    assert same.agree and same.ref_rank == 0 and same.nonfinite == 0
    assert same.kl < 1e-9 and same.nmse < 1e-9 and same.max_abs < 1e-4
    previous = same
    for scale in (0.01, 0.1, 1.0):
        y = x + (np.random.default_rng(4).standard_normal(len(x)) * scale).astype(np.float32)
        m = lib.compare(y, ref)
        assert m.kl > previous.kl and m.nmse > previous.nmse and m.max_abs > previous.max_abs
        previous = m


def test_nan_and_inf_are_counted_and_all_nan_is_worst(lib):
    x = np.linspace(-3, 3, 500).astype(np.float32)
    ref = lib.topk(x, 8)
    y = x.copy()
    y[[3, 9]] = np.nan
    y[11] = np.inf
    y[12] = -np.inf                                  # probability 0, not a fault
    m = lib.compare(y, ref)
    assert m.nonfinite == 3 and m.agree and math.isfinite(m.kl)
    y[ref.token] = np.nan
    m = lib.compare(y, ref)
    assert m.ref_rank == -1 and m.ref_logprob == -math.inf and m.max_abs == math.inf
    m = lib.compare(np.full(500, np.nan, dtype=np.float32), ref)
    assert m.nonfinite == 500 and m.argmax == -1 and m.kl == math.inf


def test_a_reference_refuses_nonfinite_logits_and_bad_arguments(lib):
    x = np.zeros(100, dtype=np.float32)
    x[7] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        lib.topk(x, 4)
    with pytest.raises(ValueError, match="k must be"):
        lib.topk(np.zeros(10, dtype=np.float32), 11)
    ref = RefStep((1, 2), (-0.1, -2.0), 0.0, 500)      # token outside a 100-token vocabulary
    with pytest.raises(ValueError, match="vocabulary 100"):
        lib.compare(np.zeros(100, dtype=np.float32), ref)
    with pytest.raises(ValueError, match="float32"):
        lib.compare(np.zeros(100, dtype=np.float64), RefStep((1,), (-0.1,), 0.0, 1))


def test_logits_by_address_are_not_copied(lib):
    x = (np.arange(64, dtype=np.float32) / 10).astype(np.float32)
    ref = lib.topk(x, 4)
    by_addr = lib.compare((x.ctypes.data, len(x)), ref)
    assert by_addr == lib.compare(x, ref)

"""The workload's use of hypothesis internals (soak/loop/_hypothesis_compat.py)."""

import hypothesis
import hypothesis.internal.conjecture.providers as providers
import pytest

from soak import errors
from soak.loop import _hypothesis_compat as compat


def test_installed_hypothesis_has_what_the_workload_uses():
    missing = compat.problems()
    assert not missing, (f"hypothesis {hypothesis.__version__} lacks internals soak's workload uses: "
                         f"{missing}; soak supports hypothesis{compat.SUPPORTED} (see soak/loop/_hypothesis_compat.py)")


def test_an_incompatible_hypothesis_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(compat, "_checked", False)
    monkeypatch.delattr(providers, "_get_local_constants")
    assert any("_get_local_constants" in p for p in compat.problems())
    with pytest.raises(errors.HarnessError) as info:
        compat.check()
    assert hypothesis.__version__ in info.value.message and "_get_local_constants" in info.value.message
    assert info.value.hint == f"pip install 'hypothesis{compat.SUPPORTED}'"
    assert info.value.exit_code == errors.ExitCode.HARNESS


def test_a_changed_signature_is_refused(monkeypatch):
    from hypothesis.internal.conjecture.data import ConjectureData

    def init(self, *, random=None):  # a future ConjectureData without max_choices=
        pass

    monkeypatch.setattr(ConjectureData, "__init__", init)
    assert compat.problems() == ["ConjectureData() takes no max_choices="]


def test_a_workload_thread_error_reaches_the_loop(monkeypatch):
    """The prefetch thread must not die silently (the loop would wait forever)."""
    from soak.loop import workload

    def broken(spec, index):
        raise RuntimeError("draw failed")

    monkeypatch.setattr(workload, "conversation", broken)
    prefetch = workload.Prefetcher(workload.WorkloadSpec(seed=1))
    with pytest.raises(RuntimeError, match="draw failed"):
        next(prefetch)
    prefetch.close()

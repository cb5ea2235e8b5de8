"""The one place soak touches hypothesis internals.

The workload draws from hypothesis strategies outside any test, from a seeded
choice sequence, so that conversation k depends on (seed, k) alone: the same
prompts in every process, whatever else it imported.  Hypothesis has no public
API for "draw from this strategy with this seed" (`.example()` is unseeded and
for interactive use), so this module uses three internals:

  ConjectureData(random=, max_choices=)   a choice sequence fed by a random.Random
  BuildContext(data, is_final=, wrapped_test=)   lets composite strategies draw
  providers._get_local_constants / Constants     hypothesis mixes constants harvested
                                          from the modules loaded so far into its draws;
                                          replaced by an empty set

pyproject.toml pins the versions they were checked with (SUPPORTED).  Any other
hypothesis is checked on first use: a missing internal is a HarnessError naming
the fix, never a traceback or a silent change of prompts
(tests/core/test_hypothesis_compat.py).
"""

from __future__ import annotations

import inspect
import random

import hypothesis

from soak import errors

SUPPORTED = ">=6.150,<7"

_checked = False


def problems() -> list[str]:
    """What the installed hypothesis lacks of what draw() uses ([] = compatible)."""
    found = []
    try:
        import hypothesis.internal.conjecture.providers as providers
        from hypothesis.control import BuildContext
        from hypothesis.errors import StopTest  # noqa: F401
        from hypothesis.internal.conjecture.data import ConjectureData
    except ImportError as exc:  # hypothesis itself, not soak: its internals moved
        return [f"cannot import its internals ({exc})"]
    if not (callable(getattr(providers, "_get_local_constants", None)) and hasattr(providers, "Constants")):
        found.append("hypothesis.internal.conjecture.providers has no _get_local_constants/Constants")
    params = inspect.signature(ConjectureData.__init__).parameters
    for name in ("random", "max_choices"):
        if name not in params:
            found.append(f"ConjectureData() takes no {name}=")
    params = inspect.signature(BuildContext.__init__).parameters
    for name in ("data", "is_final", "wrapped_test"):
        if name not in params:
            found.append(f"BuildContext() takes no {name}=")
    return found


def check() -> None:
    """HarnessError if the installed hypothesis can't draw soak's workloads."""
    global _checked
    if _checked:
        return
    missing = problems()
    if missing:
        raise errors.HarnessError(
            f"hypothesis {hypothesis.__version__} is not one soak's workload generator supports "
            f"({'; '.join(missing)})", f"pip install 'hypothesis{SUPPORTED}'")
    _no_harvested_constants()
    _checked = True


def _no_harvested_constants() -> None:
    import hypothesis.internal.conjecture.providers as providers

    empty = providers.Constants()
    providers._get_local_constants = lambda: empty


class Overrun(Exception):
    """The choice budget ran out before the strategy finished drawing."""


def draw(strategy, seed: int, max_choices: int, label=None):
    """One value of `strategy`, the same for the same seed in any process."""
    from hypothesis.control import BuildContext
    from hypothesis.errors import StopTest
    from hypothesis.internal.conjecture.data import ConjectureData

    check()
    data = ConjectureData(random=random.Random(seed), max_choices=max_choices)
    try:
        with BuildContext(data, is_final=False, wrapped_test=label or draw):
            return data.draw(strategy)
    except StopTest:
        raise Overrun(f"more than {max_choices} choices") from None

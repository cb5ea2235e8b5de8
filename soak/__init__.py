"""soak: stability and soak testing for LLM inference on OpenCL GPUs.

The library API (soak.api): soak.run(...), soak.gate(run_dir, policy), soak.classify(run_dir).
They are imported on first use, so `import soak` stays cheap.
"""

__version__ = "0.1.0"

_API = ("run", "gate", "classify", "SoakRun", "GateResult", "ClassifyResult")


def __getattr__(name: str):
    if name in _API:
        from soak import api

        return api.__dict__[name]
    raise AttributeError(f"module 'soak' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])

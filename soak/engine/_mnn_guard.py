"""Import pip MNN without its telemetry.

`MNN.tools` (the converter wrappers) imports `MNN.tools.utils.log`, which on
import runs `pip install -U aliyun-log-python-sdk` through os.system, fetches
temporary credentials from an aliyuncs.com URL and, after each mnnconvert or
mnnquant call, posts usage logs (tool, model uuid, sizes, machine id).
`import MNN` and `import MNN.llm` do not import MNN.tools today; this guard makes
sure a later import of it can't phone home either: the log module is pre-seeded
with `mnn_logger = None`, the branch MNN's own wrappers take when the logger is
unavailable.
"""

from __future__ import annotations

import sys
import types

TELEMETRY_MODULE = "MNN.tools.utils.log"


def block_mnn_telemetry() -> None:
    if TELEMETRY_MODULE in sys.modules and getattr(sys.modules[TELEMETRY_MODULE], "mnn_logger", None) is None:
        return
    stub = types.ModuleType(TELEMETRY_MODULE)
    stub.mnn_logger = None
    stub.__doc__ = "soak: MNN telemetry disabled (no pip install, no usage logs)"
    sys.modules[TELEMETRY_MODULE] = stub


def import_mnn_llm():
    """Return the `MNN.llm` module (pip `mnn`), telemetry blocked.

    Note: importing MNN prints "The device supports: ..." on C stdout; the worker
    has already moved fd 1 onto the log stream when this runs.
    """
    block_mnn_telemetry()
    import MNN.llm as mnn_llm  # noqa: PLC0415  (heavy, and prints: import late)

    return mnn_llm

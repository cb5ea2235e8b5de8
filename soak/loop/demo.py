"""`soak run --demo`: a short soak on the test engine with every fault kind injected.

Iteration numbers are global; each fault fires once (or over a short
window), so the run shows each failure detected, recorded and recovered.
"""

DEMO_ITERATIONS = 60

DEMO_PLAN = [
    # OpenCL requested, but the first load silently falls back to the CPU (MNN Schedule.cpp:136)
    {"kind": "cpu_fallback", "at": [0]},
    # host memory leaks 256 KiB per call
    {"kind": "leak", "from": 0, "bytes": 262144},
    # one failed kernel enqueue, logged and ignored by MNN
    {"kind": "cl_error", "at": [4], "code": -5, "info": "run3d"},
    # KV-cache growth fails to map, then MNN's sticky internal error
    {"kind": "kv_map_error", "at": [9]},
    {"kind": "sticky_error", "at": [14]},
    {"kind": "crash", "at": [19], "signal": "segv"},
    {"kind": "garbage", "at": [23]},
    # dead queue: a flood of -36 and the '！！！' output of a lost context
    {"kind": "cl_error", "at": [27], "code": -36, "info": "Raster", "repeat": 40, "corrupt": True},
    {"kind": "hang", "at": [31], "seconds": 3600},
    {"kind": "invalid_utf8", "at": [36]},
    {"kind": "crash", "at": [40], "signal": "abort"},
    {"kind": "empty", "at": [44]},
    {"kind": "slow", "from": 48, "until": 51, "factor": 40},
    {"kind": "log", "at": [54], "line": "Alloc Buffer 1048576 error, code:-4 "},
]

DEMO_ENGINE = {"decode_tok_per_s": 3000, "prefill_tok_per_s": 40000, "stop_probability": 0.02}

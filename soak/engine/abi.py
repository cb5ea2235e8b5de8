"""The engine ABI's vocabulary, the one Python copy of native/include/soak_engine.h.

Every Python reader of LLM status codes, return codes, perf fields or the ABI
version reads them here.  tests/core/test_vocabulary.py parses the C header and
compares it with this module both ways, so a change on one side alone fails.
"""

from __future__ import annotations

ABI_VERSION = 2                  # SOAK_ENGINE_ABI_VERSION
ABI_MIN_VERSION = 1              # SOAK_ENGINE_ABI_MIN_VERSION: the oldest library soak loads

# every ABI function, in header order: the required ones, then the optional
# oracle functions (ABI 2), which soak uses only when a library has all of them
REQUIRED_FUNCTIONS = ("abi_version", "name", "create", "set_config", "load", "respond", "reset",
                      "reinit", "status", "perf", "destroy")
ORACLE_FUNCTIONS = ("tokenize", "forward", "is_stop", "token_bytes")
ORACLE_SINCE = 2                 # the ABI version that added ORACLE_FUNCTIONS

# soak_status: MNN::Transformer::LlmStatus (llm.hpp), as SOAK_STATUS_<NAME>
STATUS = {
    "NOT_LOADED": -1,
    "RUNNING": 0,
    "NORMAL_FINISHED": 1,
    "MAX_TOKENS_FINISHED": 2,
    "USER_CANCEL": 3,
    "INTERNAL_ERROR": 4,
    "TIMEOUT": 5,
}
STATUS_NAMES = {code: name for name, code in STATUS.items()}

NOT_LOADED = STATUS["NOT_LOADED"]
RUNNING = STATUS["RUNNING"]
# the engine finished the turn: its text is judged
FINISHED_STATUSES = frozenset({STATUS["NORMAL_FINISHED"], STATUS["MAX_TOKENS_FINISHED"]})
# sticky in MNN: every later call is refused until reinit (generate_init)
ERROR_STATUSES = frozenset({STATUS["USER_CANCEL"], STATUS["INTERNAL_ERROR"], STATUS["TIMEOUT"]})

# return codes of the int-returning calls, as SOAK_<NAME>
RETURN_CODES = {
    "OK": 0,
    "ERR_INVALID_ARG": -1,       # null handle, bad JSON, ...
    "ERR_STATE": -2,             # wrong order: respond before load, ...
    "ERR_ENGINE": -3,            # the engine itself reported failure
}
OK = RETURN_CODES["OK"]
ERR_INVALID_ARG = RETURN_CODES["ERR_INVALID_ARG"]
ERR_STATE = RETURN_CODES["ERR_STATE"]
ERR_ENGINE = RETURN_CODES["ERR_ENGINE"]

# struct soak_perf, in order: (field, C type)
PERF_FIELDS = (
    ("prompt_tokens", "int32_t"),
    ("generated_tokens", "int32_t"),
    ("prefill_us", "int64_t"),
    ("decode_us", "int64_t"),
    ("load_us", "int64_t"),
)
PERF_NAMES = tuple(name for name, _ in PERF_FIELDS)


def zero_perf(**known: int) -> dict:
    """A perf dict with every field (0 where not known)."""
    return {name: int(known.get(name, 0)) for name in PERF_NAMES}

"""CL code names for the catalog: the table lives in soak.cl_codes."""

from __future__ import annotations

from soak import cl_codes
from soak.cl_codes import CL_ERROR_CODES  # name -> code
from soak.cl_codes import CL_ERROR_NAMES  # code -> name


def code_name(code: int | None) -> str:
    """`CL_INVALID_COMMAND_QUEUE` for -36; `CL_UNKNOWN(-77)` for a code no
    header names (MNN ORs setArg results, research §1.2)."""
    if code is None:
        return "CL_NONE"
    return cl_codes.code_name(code)


def parse_code(value: object) -> int | None:
    """An int, a numeric string or a CL name -> the code; None if not a code."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        return CL_ERROR_CODES.get(text.upper())
    return None

"""OpenCL error code names, read from native/interposer/cl_error_codes.tsv: the one table,
from which the interposer's C table is generated too (Khronos cl.h, cl_ext.h, ...; vendors'
codes such as NVIDIA's -9999 are listed there, with where they come from)."""

from __future__ import annotations

from pathlib import Path

from soak.native_build import NATIVE_DIR

CODES_FILE = NATIVE_DIR / "interposer" / "cl_error_codes.tsv"


def read_table(path: Path = CODES_FILE) -> dict[int, str]:
    """code -> name, in the file's order.  Lines CODE<TAB>NAME<TAB>WHERE, '#' comments.
    A broken table is a broken install: RuntimeError naming the line."""
    names: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        try:
            code = int(cols[0])
        except ValueError:
            code = None
        if len(cols) != 3 or code is None or code > 0 or not cols[1].startswith("CL_"):
            raise RuntimeError(f"{path}:{n}: want CODE<TAB>CL_NAME<TAB>WHERE, got {line!r}")
        if code in names or cols[1] in names.values():
            raise RuntimeError(f"{path}:{n}: {code} {cols[1]} is listed twice")
        names[code] = cols[1]
    return names


CL_ERROR_NAMES: dict[int, str] = read_table()
CL_ERROR_CODES: dict[str, int] = {name: code for code, name in CL_ERROR_NAMES.items()}


def code_name(code: int) -> str:
    """Name of a CL code.  MNN ORs setArg codes together, so unknown codes are named as such."""
    return CL_ERROR_NAMES.get(code, f"CL_UNKNOWN({code})")

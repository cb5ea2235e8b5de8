"""CL error names have one table, native/interposer/cl_error_codes.tsv: soak.cl_codes reads it and
gen_wrappers.py generates the interposer's C table from it.  These tests compile that C table and
compare it with Python's, hold the table to the Khronos headers, and find second copies."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soak import cl_codes

ROOT = Path(__file__).resolve().parents[2]
INTERPOSER = ROOT / "native" / "interposer"
KHRONOS = ROOT / "tests" / "data" / "khronos-opencl-headers"
DEBIAN = Path("/usr/include")

PROBE = r"""
#include <stdio.h>
#include "cl_codes.h"
int main(void)
{
    for (const soak_code_name *e = soak_code_names; e->name; e++)
        printf("%d %s\n", e->code, e->name);
    return 0;
}
"""


def _gen():
    sys.path.insert(0, str(INTERPOSER))
    try:
        import gen_wrappers
    finally:
        sys.path.remove(str(INTERPOSER))
    return gen_wrappers


def generate(tmp: Path, codes: Path = cl_codes.CODES_FILE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(INTERPOSER / "gen_wrappers.py"), "--cc", "cc", "--include-dir",
                           str(DEBIAN), "--out-dir", str(tmp), "--codes", str(codes)], capture_output=True, text=True)


def c_table(tmp: Path, codes: Path = cl_codes.CODES_FILE) -> dict[int, str]:
    """The C table the interposer build generates from `codes`, compiled and printed by a probe."""
    gen = generate(tmp / "gen", codes)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    (tmp / "probe.c").write_text(PROBE)
    exe = tmp / "probe"
    cc = subprocess.run([shutil.which("cc") or "cc", "-std=c11", "-Wall", "-Werror", "-I", str(INTERPOSER),
                         str(tmp / "probe.c"), str(tmp / "gen" / "cl_codes.c"), "-o", str(exe)],
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    rows = [line.split(" ", 1) for line in out.splitlines()]
    table = {int(code): name for code, name in rows}
    assert len(table) == len(rows), "a code twice in the C table"
    return table


def test_c_table_is_python_table(tmp_path):
    """The compiled C table names every error code exactly as soak.cl_codes does (and CL_SUCCESS,
    the code_name of a silent fault's record: a skip or corrupt rule's call returns it)."""
    py = dict(cl_codes.CL_ERROR_NAMES)
    assert cl_codes.CL_ERROR_NAMES[0] == "CL_SUCCESS"
    assert c_table(tmp_path) == py
    assert py[-9999] == "CL_NV_INVALID_MEM_ACCESS" and py[-5] == "CL_OUT_OF_RESOURCES"


def test_c_table_follows_the_file(tmp_path):
    """A row added to the table reaches both languages: the C table generated from an edited copy
    has it, and Python's reader of the same copy has it."""
    edited = tmp_path / "codes.tsv"
    edited.write_text(cl_codes.CODES_FILE.read_text() + "-12345\tCL_TEST_ONLY_CODE_VENDOR\ta test\n")
    assert c_table(tmp_path, edited)[-12345] == "CL_TEST_ONLY_CODE_VENDOR"
    assert cl_codes.read_table(edited)[-12345] == "CL_TEST_ONLY_CODE_VENDOR"


@pytest.mark.parametrize("line", ["-5\tCL_DUPLICATE_OF_MINUS_5\tx", "5\tCL_POSITIVE\tx", "-77\tNOT_A_CL_NAME\tx",
                                  "-77 CL_SPACES_NOT_TABS x"])
def test_bad_table_is_refused_by_both_readers(tmp_path, line):
    bad = tmp_path / "codes.tsv"
    bad.write_text(cl_codes.CODES_FILE.read_text() + line + "\n")
    gen = generate(tmp_path / "gen", bad)
    assert gen.returncode != 0 and f"{bad}:" in gen.stderr and "Traceback" not in gen.stderr
    with pytest.raises(RuntimeError, match=re.escape(f"{bad}:")):
        cl_codes.read_table(bad)


@pytest.mark.parametrize("include_dir", [DEBIAN, KHRONOS], ids=["bookworm", "khronos"])
def test_table_names_every_header_code(include_dir):
    """Every error code the headers define (all of them, D3D and VA-API ones too) is in the table
    under the name the headers give it first; a header update that adds codes fails here."""
    header = _gen().header_error_codes(str(include_dir))
    assert len(header) > 90
    missing = {code: name for code, (name, _) in header.items() if code not in cl_codes.CL_ERROR_NAMES}
    renamed = {code: (name, cl_codes.CL_ERROR_NAMES[code]) for code, (name, _) in header.items()
               if code in cl_codes.CL_ERROR_NAMES and cl_codes.CL_ERROR_NAMES[code] != name}
    assert not missing, f"add these to {cl_codes.CODES_FILE.name}: {missing}"
    assert not renamed, renamed


def test_codes_no_header_defines_are_the_vendor_rows():
    """Rows that are not in the Khronos headers say where they come from (a vendor), not a header."""
    header = _gen().header_error_codes(str(KHRONOS))
    rows = [line.split("\t") for line in cl_codes.CODES_FILE.read_text().splitlines() if line and line[0] != "#"]
    extra = {int(code): where for code, _, where in rows if int(code) not in header and int(code) != 0}
    assert extra and all(not where.endswith(".h") for where in extra.values()), extra


def _sources() -> list[Path]:
    return sorted(p for folder in (ROOT / "soak", ROOT / "native") for p in folder.rglob("*")
                  if p.suffix in (".py", ".c", ".h", ".cpp", ".hpp") and "__pycache__" not in p.parts)


def test_no_second_copy_of_a_code_name():
    """No source file outside the table spells an error name as a string: a name is looked up.
    (C code uses the headers' constants, e.g. a fault rule's default CL_OUT_OF_RESOURCES; so does the
    C that gen_wrappers.py writes, which is why it is not scanned: a table it wrote by hand would
    differ from Python's, which test_c_table_is_python_table catches.)"""
    names = set(cl_codes.CL_ERROR_NAMES.values())
    found = []
    for path in _sources():
        if path.name == "gen_wrappers.py":
            continue
        for m in re.finditer(r"""["'](CL_[A-Z0-9_]+)["']""", path.read_text(errors="replace")):
            if m.group(1) in names:
                found.append(f"{path.relative_to(ROOT)}: {m.group(1)}")
    assert not found, found
    assert sum("-9999" in p.read_text(errors="replace") and "CL_NV_INVALID_MEM_ACCESS" in p.read_text(errors="replace")
               for p in [*_sources(), cl_codes.CODES_FILE]) == 1

"""The stats file's layout is declared once, in native/interposer/stats_layout.h: the interposer
maps its structs and soak.cl.stats_layout reads the same header for soak.cl.trace.  A C probe,
compiled with the real header, prints offsetof/sizeof of every field the Python side read, so a
field the reader misplaces, misses or invents fails here, and a field added to the header moves
the reader with it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from soak.cl import stats_layout, trace

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "native" / "interposer" / "stats_layout.h"
FORMAT_MD = ROOT / "native" / "interposer" / "FORMAT.md"
STRUCTS = ("soak_stats_header", "soak_stats_kind", "soak_stats_api", "soak_stats_agg")


def probe(header: Path, layout: stats_layout.Layout, tmp: Path) -> list[str]:
    """Lines the C compiler's view of `header` gives for what `layout` read from it."""
    src = ["#include <stddef.h>", "#include <stdio.h>", f'#include "{header.name}"', "int main(void)", "{"]
    for s in layout.structs.values():
        src.append(f'    printf("{s.name} size %zu\\n", sizeof({s.name}));')
        for f in s.fields:
            src.append(f'    printf("{s.name}.{f.name} %zu %zu\\n", offsetof({s.name}, {f.name}), '
                       f"sizeof((({s.name} *)0)->{f.name}));")
    for name, value in layout.defines.items():
        if isinstance(value, str):
            src.append(f'    printf("{name} %s\\n", {name});')
        else:
            src.append(f'    printf("{name} %llu\\n", (unsigned long long)({name}));')
    src += ["    return 0;", "}", ""]
    (tmp / "probe.c").write_text("\n".join(src))
    cc = subprocess.run([shutil.which("cc") or "cc", "-std=c11", "-Wall", "-Werror", "-I", str(header.parent),
                         str(tmp / "probe.c"), "-o", str(tmp / "probe")], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    return subprocess.run([str(tmp / "probe")], capture_output=True, text=True, check=True).stdout.splitlines()


def python_view(layout: stats_layout.Layout) -> list[str]:
    out = []
    for s in layout.structs.values():
        out.append(f"{s.name} size {s.size}")
        out += [f"{s.name}.{f.name} {f.offset} {f.size}" for f in s.fields]
    out += [f"{name} {value}" for name, value in layout.defines.items()]
    return out


def test_python_reads_the_layout_the_compiler_builds(tmp_path):
    layout = stats_layout.load()
    assert set(STRUCTS) <= set(layout.structs)
    assert probe(HEADER, layout, tmp_path) == python_view(layout)
    # every field every struct has, with the struct's size: nothing between fields the reader skipped
    for s in layout.structs.values():
        assert s.format.size == s.size


def test_trace_reader_uses_the_declared_layout():
    layout = stats_layout.load()
    hdr = layout.struct("soak_stats_header")
    assert trace.EPOCH_OFFSET == hdr.offset("epoch") and trace.PHASE_OFFSET == hdr.offset("phase")
    assert set(trace._HDR_FIELDS) <= set(hdr.names())
    assert trace.STATS_MAGIC == layout.define("SOAK_STATS_MAGIC").encode() == b"SOAKCLS1"
    assert trace.SAMPLES == layout.define("SOAK_AGG_SAMPLES")


def test_a_field_added_in_the_header_moves_the_reader(tmp_path):
    """Add a field before `epoch` in a copy of the header: the compiler and the reader both move
    epoch, phase and the size, by the same amounts."""
    text = HEADER.read_text()
    edited = text.replace("    uint64_t untracked_releases;", "    uint64_t untracked_releases;\n    uint32_t added;", 1)
    assert edited != text
    copy = tmp_path / "stats_layout.h"
    copy.write_text(edited)
    layout = stats_layout.load(copy)
    hdr = layout.struct("soak_stats_header")
    before = stats_layout.load().struct("soak_stats_header")
    assert hdr.offset("added") == before.offset("epoch")
    assert hdr.offset("epoch") == before.offset("epoch") + 8  # u32, then u64 alignment
    assert hdr.size == before.size + 8
    assert probe(copy, layout, tmp_path) == python_view(layout)


@pytest.mark.parametrize("field", ["uint64_t a, b;", "unsigned long x;", "struct other *p;", "uint64_t arr[N_UNDEFINED];",
                                   "volatile uint64_t v;"])
def test_what_the_reader_cannot_read_is_refused_by_name(tmp_path, field):
    text = HEADER.read_text().replace("    uint64_t agg_used;", f"    {field}\n    uint64_t agg_used;", 1)
    with pytest.raises(stats_layout.LayoutError, match=r"soak_stats_header"):
        stats_layout.parse(text, tmp_path / "h")


def test_format_md_header_table_matches():
    """FORMAT.md's header table (offset | type | field) says what the header declares."""
    text = FORMAT_MD.read_text()
    section = text[text.index("Header ("):text.index("Then `n_kinds` entries")]
    rows = re.findall(r"^\| (\d+) \| (\S+) \| `?(\w+)", section, re.M)
    hdr = stats_layout.load().struct("soak_stats_header")
    assert [(int(off), name) for off, _, name in rows] == [(f.offset, f.name) for f in hdr.fields]
    assert f"Header ({hdr.size} bytes)" in text
    for name in ("kind", "api", "agg"):
        size = stats_layout.load().struct(f"soak_stats_{name}").size
        assert f"({size})" in section or f"of {size} bytes" in text

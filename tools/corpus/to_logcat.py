#!/usr/bin/env python3
"""CONVERT (not capture) an llm_demo stdout/stderr capture into Android logcat threadtime text.

    to_logcat.py RAW.txt OUT.txt [--pid 12345] [--start '12-01 03:30:00.000']

On Android, MNN's MNN_PRINT is __android_log_print(ANDROID_LOG_INFO, "MNNJNI", ...) and MNN_ERROR
is ANDROID_LOG_ERROR with the same tag (include/MNN/MNNDefine.h); a native program's own stdout
(llm_demo's std::cout, the model's answer) reaches no log. On Linux both macros are printf, so
each line is matched against the literal format strings of every MNN_PRINT / MNN_ERROR call in the
MNN source (/work/mnn-src): matched lines become MNNJNI lines at I or E; other lines are dropped
and counted. Timestamps are synthetic (start + 1 ms per line), pid = tid = --pid.
"""
import argparse
import datetime as dt
import re
import sys
from pathlib import Path

SRC = Path("/work/mnn-src")
CALL = re.compile(r'MNN_(ERROR|PRINT)\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)')
CONV = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?(?:hh|h|ll|l|z|j|t|L)?([diouxXeEfgGcspa%])")


def fmt_to_regex(fmt: str) -> str | None:
    out, pos = [], 0
    for m in CONV.finditer(fmt):
        out.append(re.escape(fmt[pos:m.start()]))
        c = m.group(1)
        out.append({"%": "%", "s": ".*?", "c": "."}.get(c, r"[-+0-9a-fA-FxX.einfINFNa]+?"))
        pos = m.end()
    out.append(re.escape(fmt[pos:]))
    rx = "".join(out).strip()
    literal = re.sub(r"[\s\W]", "", CONV.sub("", fmt))
    return rx if len(literal) >= 4 else None


def formats() -> list[tuple[re.Pattern, str]]:
    pats = []
    for path in list(SRC.glob("source/**/*.[ch]pp")) + list(SRC.glob("source/**/*.h")) + \
            list(SRC.glob("transformers/llm/engine/src/**/*.[ch]pp")) + list(SRC.glob("express/**/*.[ch]pp")):
        text = path.read_text(errors="replace")
        for m in CALL.finditer(text):
            lits = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2))
            fmt = "".join(lits).encode().decode("unicode_escape", errors="replace")
            for piece in fmt.split("\n"):
                rx = fmt_to_regex(piece.strip())
                if rx:
                    pats.append((re.compile("^\\s*" + rx + "\\s*$"), "E" if m.group(1) == "ERROR" else "I"))
    # longest patterns first: the most specific format wins
    pats.sort(key=lambda p: -len(p[0].pattern))
    return pats


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("out")
    ap.add_argument("--pid", type=int, default=12345)
    ap.add_argument("--start", default="12-01 03:30:00.000")
    a = ap.parse_args()
    pats = formats()
    t = dt.datetime.strptime("2026-" + a.start, "%Y-%m-%d %H:%M:%S.%f")
    kept = dropped = 0
    lines = []
    for line in Path(a.raw).read_text(errors="replace").splitlines():
        if line.startswith("# ") or not line.strip():
            continue
        level = next((lv for rx, lv in pats if rx.match(line)), None)
        if level is None:
            dropped += 1
            continue
        kept += 1
        stamp = t.strftime("%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"
        lines.append(f"{stamp} {a.pid:5d} {a.pid:5d} {level} MNNJNI  : {line.rstrip()}")
        t += dt.timedelta(milliseconds=1)
    header = (f"--------- beginning of main\n")
    Path(a.out).write_text(header + "\n".join(lines) + "\n")
    print(f"{a.out}: {kept} MNN lines rendered as MNNJNI, {dropped} non-MNN stdout lines dropped "
          f"({len(pats)} MNN_PRINT/MNN_ERROR formats)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plain-text tables for `soak classify` and `soak catalog list`."""

from __future__ import annotations

import shutil
import sys


def render(headers: list[str], rows: list[list], max_width: int | None = None) -> str:
    """Columns sized to content; the last column is cut to the terminal width."""
    if max_width is None:
        max_width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 10**6
    width = max_width
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(c))
    fixed = sum(widths[:-1]) + 2 * (len(headers) - 1)
    last = max(20, width - fixed)
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths[:-1])) + ("  " if len(headers) > 1 else "") + headers[-1]]
    for row in cells:
        tail = row[-1] if len(row[-1]) <= last else row[-1][: last - 1] + "…"
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths[:-1])) + ("  " if len(row) > 1 else "") + tail)
    return "\n".join(line.rstrip() for line in lines)


def iters(first, last) -> str:
    if first is None:
        return "-"
    return str(first) if first == last else f"{first}-{last}"


def findings_table(result: dict) -> str:
    rows = []
    for d in result["findings"]:
        fault = d["fault_id"] or d["signature"]
        why = ""
        if d["matches"]:
            why = "; ".join(d["matches"][0]["why"][:3])
        elif d["near_misses"]:
            nm = d["near_misses"][0]
            why = f"near miss {nm['id']}: " + "; ".join(nm["mismatch"][:2])
        else:
            why = d["signature_text"]
        rows.append([d["severity"], fault, d["kind"], d["phase"] or "-", d["count"],
                     iters(d["first_iteration"], d["last_iteration"]), why])
    return render(["SEVERITY", "FAULT", "KIND", "PHASE", "COUNT", "ITER", "WHY / SIGNATURE"], rows)


def near_miss_lines(result: dict) -> list[str]:
    out = []
    for d in result["findings"]:
        for nm in d["near_misses"][:2]:
            if nm.get("generic"):
                continue
            out.append(f"  {d['fault_id'] or d['signature']}: looks like {nm['id']} ({nm['title']}), but "
                       + "; ".join(nm["mismatch"]))
    return out


def farm_table(farm: dict) -> str:
    rows = []
    for r in farm["faults"]:
        rows.append([r["severity"], r["fault"], "known" if r["known"] else "new", len(r["runs"]), r["count"],
                     iters(r["first_iteration"], r["last_iteration"]), r["title"]])
    return render(["SEVERITY", "FAULT", "STATUS", "RUNS", "COUNT", "ITER", "TITLE"], rows)

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


def oracle_words(kind: str, turns: int, first_step) -> str | None:
    """What the logits oracle saw, in words (wrong_output, nonfinite_logits), else None."""
    at = f", first diverging step {first_step}" if first_step is not None else ""
    n = f"{turns} checked turn{'' if turns == 1 else 's'}"
    if kind == "wrong_output":
        return f"wrong answer: teacher-forced logits off the reference in {n}{at}"
    if kind == "nonfinite_logits":
        return f"NaN/inf logits in {n}" + (f" from step {first_step}" if first_step is not None else "")
    return None


def _first_step(result: dict, signatures) -> int | None:
    steps = [(d.get("ranges") or {}).get("first_step") for d in result["findings"] if d["signature"] in signatures]
    steps = [r[0] for r in steps if r]
    return min(steps) if steps else None


def causes_table(result: dict) -> str:
    """One row per root cause, first the earliest; beneath it its tags and
    its cascade (what followed from it), counted by kind, code and tag."""
    rows = []
    for c in result["causes"]:
        cause = c["fault_id"] or c["signature"]
        what = c["why"] if c["known"] else (oracle_words(c["kind"], c["count"], _first_step(result, c["findings"]))
                                            or c["signature_text"])
        rows.append([str(c["rank"]), c["severity"], cause + (" [injected]" if c["injected"] else ""),
                     "+".join(c.get("kinds") or [c["kind"]]), c["phase"] or "-", c["count"], iters(c["first_iteration"], c["last_iteration"]),
                     what])
    table = render(["#", "SEVERITY", "CAUSE", "KIND", "PHASE", "COUNT", "ITER", "WHY / SIGNATURE"], rows)
    lines = table.splitlines()
    out = lines[:1]
    for c, line in zip(result["causes"], lines[1:]):
        out.append(line)
        if len(c["tags"]) > 1 or (c["tags"] and c["kind"] == "cl_call_error"):
            out.append("     tags: " + ", ".join(f"{t} x{n}" for t, n in list(c["tags"].items())[:12])
                       + (f", +{len(c['tags']) - 12} more" if len(c["tags"]) > 12 else ""))
        for k in c["cascade"][:8]:
            code = f" {k['name']}" if k["name"] else ""
            tag = f" {k['tag']}" if k["tag"] else ""
            fid = f"  [{k['fault_id']}]" if k["fault_id"] else ""
            words = oracle_words(k["kind"], k["count"], _first_step(result, k.get("findings") or ()))
            words = f" ({words.split(': ', 1)[-1] if k['kind'] == 'wrong_output' else words})" if words else ""
            out.append(f"     -> {k['count']} x {k['kind']}{code}{tag}{fid}{words}")
        if len(c["cascade"]) > 8:
            rest = c["cascade"][8:]
            out.append(f"     -> {sum(k['count'] for k in rest)} more in {len(rest)} other kinds/tags")
    return "\n".join(out)


def near_miss_lines(result: dict) -> list[str]:
    """Each near-miss entry once, with the causes it was a near miss for."""
    seen: dict[str, tuple[dict, list[str]]] = {}
    rows = result.get("causes") or result["findings"]
    for d in rows:
        for nm in d["near_misses"]:
            if nm.get("generic"):
                continue
            who = d["fault_id"] or d["signature"]
            if nm["id"] not in seen:
                seen[nm["id"]] = (nm, [who])
            elif who not in seen[nm["id"]][1]:
                seen[nm["id"]][1].append(who)
    return [f"  {', '.join(who)}: looks like {nm['id']} ({nm['title']}), but " + "; ".join(nm["mismatch"])
            for nm, who in seen.values()]


def farm_table(farm: dict) -> str:
    rows = []
    for r in farm["faults"]:
        rows.append([r["severity"], r["fault"], "known" if r["known"] else "new", len(r["runs"]), r["count"],
                     iters(r["first_iteration"], r["last_iteration"]), r["title"]])
    return render(["SEVERITY", "FAULT", "STATUS", "RUNS", "COUNT", "ITER", "TITLE"], rows)

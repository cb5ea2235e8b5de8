"""Output checks.  A GPU fault in MNN often shows only as bad text with a
normal status (research §1.2), so every output is checked."""

from __future__ import annotations

import re
import unicodedata

# ASCII text takes shortcuts with the same results: no ASCII character but the controls is
# garbage, and every ASCII letter is LATIN
_ASCII_SPACES = str.maketrans("", "", "\n\t\r")
_TWO_ASCII_LETTERS = re.compile("[A-Za-z][^A-Za-z]*[A-Za-z]")


def is_valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _leading_run(text: str, size: int) -> int:
    """How many times text's first `size` characters repeat back to back from its start."""
    unit, count, pos = text[:size], 0, 0
    while unit and text.startswith(unit, pos):
        count += 1
        pos += size
    return count


def repetition_ratio(text: str, min_len: int = 16) -> float:
    """Share of the text covered by its most repeated short unit (1-8 chars).

    1.0 means one unit repeated all the way (MNN's '！！！！' dead-queue output).
    The second half is judged too, where degenerate loops usually settle.
    Short texts score 0: nothing to judge.
    """
    stripped = "".join(text.split())
    if len(stripped) < min_len:
        return 0.0
    tail = stripped[len(stripped) // 2:]
    best = 0.0
    for size in range(1, 9):
        for part, weight in ((stripped, 1.0), (tail, 0.99)):
            count = _leading_run(part, size)
            if count >= 3:
                best = max(best, count * size / len(part) * weight)
    return min(best, 1.0)


def garbage_ratio(text: str) -> float:
    """Share of characters that no language model should emit: control
    characters (other than whitespace), U+FFFD and unassigned code points."""
    if not text:
        return 0.0
    if text.isascii() and text.translate(_ASCII_SPACES).isprintable():
        return 0.0
    bad = 0
    for ch in text:
        if ch in "\n\t\r":
            continue
        cat = unicodedata.category(ch)
        if ch == "\ufffd" or cat in ("Cc", "Cn", "Co", "Cs"):
            bad += 1
    return bad / len(text)


def script_mix(text: str) -> int:
    """How many writing systems the letters of a text come from (LATIN, CJK, ARABIC, ...).

    A model answers in one or two; a corrupted GPU emits letters from many.
    Counts scripts that hold at least two letters, so a lone symbol doesn't count.
    """
    if text.isascii():
        return 1 if _TWO_ASCII_LETTERS.search(text) else 0
    counts: dict[str, int] = {}
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        script = name.split(" ", 1)[0] if name else "UNNAMED"
        if script in ("CJK", "HIRAGANA", "KATAKANA"):
            script = "CJK"
        counts[script] = counts.get(script, 0) + 1
    return sum(1 for n in counts.values() if n >= 2)


def check_output(data: bytes, max_new_tokens: int) -> dict:
    try:
        text = decodable = data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
        text = data.decode("utf-8", errors="replace")
        # invalid bytes are their own symptom; garbage judges the characters that did decode
        decodable = data.decode("utf-8", errors="ignore")
    rep = repetition_ratio(text)
    garbage = garbage_ratio(decodable)
    scripts = script_mix(decodable)
    return {
        "utf8_valid": valid,
        "empty": len(data) == 0 and max_new_tokens != 0,
        "repetition": round(rep, 3),
        "garbage": round(garbage, 3),
        "degenerate": rep >= 0.9,
        "scripts": scripts,
        "garbled": garbage >= 0.2 or scripts >= 5,
    }


def symptoms(checks: dict) -> list[str]:
    out = []
    if not checks["utf8_valid"]:
        out.append("invalid_utf8")
    if checks["empty"]:
        out.append("empty")
    if checks["degenerate"]:
        out.append("repetition")
    if checks["garbled"]:
        out.append("garbage")
    return out

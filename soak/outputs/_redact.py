"""Redaction for bundles: prompts (and outputs) by length and hash, device serials by a hash."""

from __future__ import annotations

import hashlib
import re

from soak.analysis.loaded_run import RunFolder


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Redactor:
    def __init__(self, run: RunFolder, prompts: bool, serials: bool):
        self.prompts = prompts
        self.serials = sorted(self._find_serials(run), key=len, reverse=True) if serials else []

    @staticmethod
    def _find_serials(run: RunFolder) -> set[str]:
        found: set[str] = set()

        def walk(obj, key=""):
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(v, str(k))
            elif isinstance(obj, list):
                for v in obj:
                    walk(v, key)
            elif isinstance(obj, str):
                if "serial" in key.lower() and len(obj) >= 4:
                    found.add(obj)
                for m in re.finditer(r"\badb:([A-Za-z0-9._:-]{4,})", obj):
                    found.add(m.group(1))

        walk(run.manifest)
        for e in run.notable:
            if e.get("event") in ("run_start", "worker_start", "load"):
                walk(e)
        return found

    def text(self, s: str) -> str:
        for serial in self.serials:
            s = s.replace(serial, f"SERIAL-{_sha256_text(serial)[:8]}")
        return s

    def event(self, e: dict) -> dict:
        if self.prompts and e.get("event") == "iteration":
            e = dict(e)
            for key in ("prompt", "output"):
                if isinstance(e.get(key), str):
                    e[key] = f"<redacted {len(e[key])} chars sha256:{_sha256_text(e[key])}>"
        return e

"""Expected failures and flakes (issue 26): a lab's baseline, as Mesa's deqp-runner keeps one.

A baseline file (TOML) lists the causes a lab knows fail, and the causes it knows flake:

    [[expected]]                          # a known failure: it fails no gate rule, labelled `expected`
    cause = "soak-out-of-resources"       # the cause: catalog id or signature (sig-...); a glob
                                          # (`soak-oom-*`) matches several
    device = "SM-S911*"                   # optional, globs: only on these devices,
    driver = "512.7*"                     #   GPU drivers,
    model = "qwen2 1.5B"                  #   models ("family size", as `soak history` shows them),
    backend = "opencl"                    #   and backends
    reason = "MNN#3112, fixed in 3.7"     # optional: shown with the label

    [[flake]]                             # a known flake: it fails no gate rule, labelled `flake`
    title = "*no outputs*"                # or match on the cause's title (a glob)

`cause` or `title` is required in each entry.  A cause no entry matches is `unexpected`;
`soak gate --rerun-unexpected N` re-runs each unexpected cause up to N times
(soak.rerun) and labels it `flake` when it never comes back.

Labels are per root cause (the classifier's `causes`); the findings of its cascade carry
its label.  `label_causes` gives the records the gate writes to gate.json (`causes`) and
the history stores with each occurrence.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from soak.errors import BadInput
from soak.history import run_context

EXPECTED, FLAKE, UNEXPECTED = "expected", "flake", "unexpected"
_CONTEXT_KEYS = ("device", "driver", "model", "backend")
_KEYS = {"cause", "title", "reason", *_CONTEXT_KEYS}


@dataclass
class Entry:
    label: str                    # expected | flake
    cause: str | None = None
    title: str | None = None
    context: dict = field(default_factory=dict)
    reason: str | None = None
    where: str = ""               # file:[[section]] #n, for messages

    def matches(self, cause: dict, context: dict) -> bool:
        keys = [k for k in (cause.get("fault_id"), cause.get("signature")) if k]
        if self.cause is not None and not any(fnmatch.fnmatchcase(k, self.cause) for k in keys):
            return False
        if self.title is not None and not fnmatch.fnmatchcase(str(cause.get("title") or ""), self.title):
            return False
        return all(context.get(k) is not None and fnmatch.fnmatchcase(str(context[k]), v)
                   for k, v in self.context.items())


@dataclass
class Expectations:
    path: str | None
    entries: list[Entry] = field(default_factory=list)

    def label(self, cause: dict, context: dict) -> tuple[str, str | None]:
        """(label, reason): the first matching entry's, else unexpected."""
        for e in self.entries:
            if e.matches(cause, context):
                return e.label, e.reason or f"listed in {e.where}"
        return UNEXPECTED, None


def load_expectations(path: str | Path) -> Expectations:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"expectations file {path} does not exist", "pass a TOML baseline (soak gate --help)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read expectations file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"expectations file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"expected", "flake"}
    if unknown:
        raise BadInput(f"{path}: unknown section(s) {', '.join(sorted(unknown))}",
                       "use [[expected]] and [[flake]] tables")
    out = Expectations(str(path))
    for section, label in (("expected", EXPECTED), ("flake", FLAKE)):
        items = data.get(section, [])
        if not isinstance(items, list):
            raise BadInput(f"{path}: {section} must be an array of tables ([[{section}]])")
        for n, item in enumerate(items, 1):
            where = f"{path.name} [[{section}]] #{n}"
            if not isinstance(item, dict):
                raise BadInput(f"{where} is not a table")
            bad = set(item) - _KEYS
            if bad:
                raise BadInput(f"{where}: unknown key(s) {', '.join(sorted(bad))}",
                               f"keys: {', '.join(sorted(_KEYS))}")
            for k, v in item.items():
                if not isinstance(v, str):
                    raise BadInput(f"{where}: `{k}` must be a string (got {type(v).__name__})")
            if not any(item.get(k) for k in ("cause", "title")):
                raise BadInput(f"{where}: needs `cause` (catalog id, sig-..., or a glob) or `title` (a glob)")
            out.entries.append(Entry(label, item.get("cause"), item.get("title"),
                                     {k: item[k] for k in _CONTEXT_KEYS if k in item}, item.get("reason"), where))
    return out


def cause_key(cause: dict) -> str | None:
    """The key the history gives a cause: its catalog id, else its signature."""
    return cause.get("fault_id") or cause.get("signature")


def label_causes(classification: dict, manifest: dict, expectations: Expectations | None,
                 reruns: dict[str, dict] | None = None) -> list[dict]:
    """One record per root cause: {key, signature, title, label, reason, reruns, findings}.
    reruns: {key: {"attempts": n, "recurred": k, ...}} from soak.rerun; a cause that was re-run
    and never came back is a flake."""
    context = run_context(manifest)
    out = []
    for c in classification.get("causes") or []:
        if not isinstance(c, dict) or not cause_key(c):
            continue
        label, reason = (expectations.label(c, context) if expectations else (UNEXPECTED, None))
        rerun = (reruns or {}).get(cause_key(c))
        if label == UNEXPECTED and rerun and rerun.get("attempts"):
            if not rerun.get("recurred"):
                label, reason = FLAKE, f"did not recur in {rerun['attempts']} re-run(s)"
            else:
                reason = f"recurred in {rerun['recurred']} of {rerun['attempts']} re-run(s)"
        sigs = [s for s in [c.get("signature"), *(c.get("findings") or [])] if isinstance(s, str)]
        for casc in c.get("cascade") or []:
            sigs += [s for s in (casc.get("findings") or []) if isinstance(s, str)] if isinstance(casc, dict) else []
        out.append({"key": cause_key(c), "signature": c.get("signature"), "title": c.get("title"),
                    "severity": c.get("severity"), "first_iteration": c.get("first_iteration"),
                    "label": label, "reason": reason, "reruns": rerun, "findings": sorted(set(sigs))})
    return out

"""The interposer's fault-rule grammar, checked in Python before a run starts.

    SPEC    := RULE { ";" RULE }
    RULE    := API [ "=" CODE ] [ "@" TRIGGER { "," TRIGGER } ]
    API     := an OpenCL entry point, e.g. clEnqueueNDRangeKernel
    CODE    := a negative integer (-5) or a CL_* error name (CL_OUT_OF_RESOURCES);
               default CL_OUT_OF_RESOURCES
    TRIGGER := nth:N      only the Nth call of API (calls count from 1)
             | every:K    calls K, 2K, 3K, ...
             | from:N     every call from the Nth on
             | p:P        with probability P (0..1), a pure function of seed and call number
             | seed:S     seed for p (default 1)
             | after:T    only once T seconds have passed since the library loaded (30, 1.5s, 200ms)
             | count:M    at most M injections by this rule

All triggers of a rule must hold.  A rule without triggers fails every call.
The first rule of an entry point that fires wins.  Examples:

    clEnqueueNDRangeKernel=-5@nth:50
    clCreateBuffer=CL_MEM_OBJECT_ALLOCATION_FAILURE@p:0.01,seed:7
    clCreateBuffer=-4@after:30s
    clEnqueueMapBuffer=CL_MAP_FAILURE@every:10
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from soak.cl_codes import CL_ERROR_CODES
from soak.errors import BadInput

_API_RE = re.compile(r"cl[A-Z][A-Za-z0-9_]*")
_INT_KEYS = ("nth", "every", "from", "count", "seed")
_CANNOT_FAIL = {"clGetExtensionFunctionAddress", "clGetExtensionFunctionAddressForPlatform",
                "clSVMFree", "clSVMFreeARM"}
HINT = ("a rule is API[=CODE][@TRIGGER,...], e.g. clEnqueueNDRangeKernel=-5@nth:50 or "
        "clCreateBuffer=CL_MEM_OBJECT_ALLOCATION_FAILURE@p:0.01,seed:7 (see soak/cl/fault_rules.py)")


@dataclass
class FaultRule:
    api: str
    code: int = -5
    triggers: dict[str, float | int] = field(default_factory=dict)
    text: str = ""


def _bad(rule: str, why: str) -> BadInput:
    return BadInput(f"bad OpenCL fault rule {rule!r}: {why}", HINT)


def parse_rule(text: str, known_apis: set[str] | None = None) -> FaultRule:
    rule = text.strip()
    head, _, trig = rule.partition("@")
    api, eq, code_text = head.partition("=")
    api = api.strip()
    if not _API_RE.fullmatch(api):
        raise _bad(rule, "API must be an OpenCL entry point name such as clEnqueueNDRangeKernel")
    if known_apis is not None and api not in known_apis:
        raise _bad(rule, f"{api} is not an entry point of the OpenCL headers the interposer was built from")
    if api in _CANNOT_FAIL:
        raise _bad(rule, f"{api} cannot be failed")
    out = FaultRule(api=api, text=rule)
    if eq:
        c = code_text.strip()
        if c in CL_ERROR_CODES:
            out.code = CL_ERROR_CODES[c]
        elif re.fullmatch(r"-\d+", c):
            out.code = int(c)
        else:
            raise _bad(rule, "CODE must be a negative integer or a CL_* error name")
        if out.code == 0:
            raise _bad(rule, "CODE must be an error (negative), not CL_SUCCESS")
    if trig:
        for t in trig.split(","):
            key, colon, value = t.strip().partition(":")
            if not colon:
                raise _bad(rule, f"trigger {t!r} is not KEY:VALUE")
            if key in _INT_KEYS:
                if not value.isdigit() or (int(value) == 0 and key != "seed"):
                    raise _bad(rule, f"{key} takes a positive integer")
                out.triggers[key] = int(value)
            elif key == "p":
                try:
                    p = float(value)
                except ValueError:
                    p = -1.0
                if not 0.0 <= p <= 1.0:
                    raise _bad(rule, "p takes a probability between 0 and 1")
                out.triggers["p"] = p
            elif key == "after":
                m = re.fullmatch(r"(\d+(?:\.\d*)?)(s|ms)?", value)
                if not m:
                    raise _bad(rule, "after takes seconds: after:30, after:1.5s or after:200ms")
                secs = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
                out.triggers["after"] = secs
            else:
                raise _bad(rule, f"unknown trigger {key!r} (nth, every, from, count, p, seed, after)")
    return out


def parse_spec(spec: str | list[str] | tuple[str, ...], known_apis: set[str] | None = None) -> list[FaultRule]:
    """Parse one spec string or several (from repeated --cl-fault); raise BadInput on the first bad rule."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    rules = []
    for part in parts:
        for text in re.split(r"[;\n]", part):
            if text.strip():
                rules.append(parse_rule(text, known_apis))
    return rules


def join_spec(rules: list[FaultRule]) -> str:
    """The SOAK_CL_FAULTS value for these rules (codes as numbers)."""
    out = []
    for r in rules:
        trig = ",".join(f"{k}:{v:g}" if isinstance(v, float) else f"{k}:{v}" for k, v in r.triggers.items())
        out.append(f"{r.api}={r.code}" + (f"@{trig}" if trig else ""))
    return ";".join(out)

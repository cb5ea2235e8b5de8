"""The interposer's fault-rule grammar, checked in Python before a run starts.

    SPEC    := RULE { ";" RULE }
    RULE    := API [ "=" ACTION ] [ "@" TRIGGER { "," TRIGGER } ]
    API     := an OpenCL entry point, e.g. clEnqueueNDRangeKernel
    ACTION  := CODE                          fail the call with CODE (default CL_OUT_OF_RESOURCES)
             | skip                          return CL_SUCCESS without the driver (clEnqueueNDRangeKernel;
                                             an event asked for is a marker: it completes)
             | corrupt [ ":" MODE ] [ ":" WORDS ]
                                             the call runs, then WORDS 32-bit words of its destination
                                             (default 1; all) are perturbed in device memory: MODE nan
                                             (default; 0x7fc07fc0, NaN as fp32 and as fp16) or bitflip
                                             (one bit each); positions and bits from seed and call number
                                             (CORRUPT_APIS)
    CODE    := a negative integer (-5) or a CL_* error name (CL_OUT_OF_RESOURCES)
    TRIGGER := nth:N      only the Nth call of API (calls count from 1)
             | every:K    calls K, 2K, 3K, ...
             | from:N     every call from the Nth on
             | p:P        with probability P (0..1), a pure function of seed and call number
             | seed:S     seed for p and for corrupt's positions (default 1)
             | after:T    only once T seconds have passed since the library loaded (30, 1.5s, 200ms)
             | count:M    at most M injections by this rule
             | kernel:G   only calls whose kernel's name matches the glob G (fnmatch: * ? [..]); then
                          nth/every/from/p count the matching calls (entry points taking a cl_kernel)

All triggers of a rule must hold.  A rule without triggers fails every call.
The first rule of an entry point that fires wins.  skip and corrupt are silent: the call returns
CL_SUCCESS, and the interposer writes an injected `error` record with code 0 and `action`.  Examples:

    clEnqueueNDRangeKernel=-5@nth:50
    clCreateBuffer=CL_MEM_OBJECT_ALLOCATION_FAILURE@p:0.01,seed:7
    clCreateBuffer=-4@after:30s
    clEnqueueMapBuffer=CL_MAP_FAILURE@every:10
    clEnqueueNDRangeKernel=skip@kernel:softmax*,nth:3
    clEnqueueWriteBuffer=corrupt:bitflip:all@from:200,count:1,seed:7
    clSetKernelArg=-49@kernel:*matmul*,nth:2
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
# the silent actions and where the interposer implements them (native/interposer/hooks.h, silent.c)
SKIP_APIS = frozenset({"clEnqueueNDRangeKernel"})
CORRUPT_APIS = frozenset({"clEnqueueWriteBuffer", "clEnqueueCopyBuffer", "clEnqueueWriteImage",
                          "clEnqueueCopyImage", "clEnqueueUnmapMemObject"})
CORRUPT_MODES = ("nan", "bitflip")
# entry points with a `cl_kernel kernel` parameter (the kernel:GLOB trigger; gen_wrappers.py flags the
# same ones from the headers, tests/cl/test_silent_faults.py checks the two agree)
KERNEL_APIS = frozenset({
    "clCommandNDRangeKernelKHR", "clEnqueueNDRangeKernel", "clEnqueueTask", "clGetKernelArgInfo", "clGetKernelInfo",
    "clGetKernelSubGroupInfo", "clGetKernelSuggestedLocalWorkSizeKHR",
    "clGetKernelSuggestedLocalWorkSizeINTEL", "clGetKernelWorkGroupInfo", "clReleaseKernel", "clRetainKernel",
    "clSetKernelArg", "clSetKernelArgDevicePointerEXT", "clSetKernelArgMemPointerINTEL",
    "clSetKernelArgSVMPointer", "clSetKernelArgSVMPointerARM", "clSetKernelExecInfo", "clSetKernelExecInfoARM",
})
_GLOB_MAX = 95  # the interposer keeps 96 bytes with the NUL
HINT = ("a rule is API[=ACTION][@TRIGGER,...], ACTION a CL error (-5, CL_*), skip or corrupt[:nan|:bitflip][:WORDS], "
        "e.g. clEnqueueNDRangeKernel=-5@nth:50, clCreateBuffer=CL_MEM_OBJECT_ALLOCATION_FAILURE@p:0.01,seed:7, "
        "clEnqueueNDRangeKernel=skip@kernel:softmax*,nth:3 (see soak/cl/fault_rules.py)")


@dataclass
class FaultRule:
    api: str
    code: int = -5           # the error to return (action "error"); 0 for skip and corrupt
    triggers: dict[str, float | int | str] = field(default_factory=dict)
    text: str = ""
    action: str = "error"    # error | skip | corrupt
    mode: str | None = None  # corrupt: nan | bitflip
    words: int | None = None  # corrupt: 32-bit words perturbed (0: all)

    @property
    def action_text(self) -> str:
        """ACTION as the interposer reads it (codes as numbers)."""
        if self.action == "skip":
            return "skip"
        if self.action == "corrupt":
            return f"corrupt:{self.mode}:{'all' if self.words == 0 else self.words}"
        return str(self.code)


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
    c = code_text.strip()
    if eq and c == "skip":
        if api not in SKIP_APIS:
            raise _bad(rule, f"skip applies to {', '.join(sorted(SKIP_APIS))} only")
        out.action, out.code = "skip", 0
    elif eq and (c == "corrupt" or c.startswith("corrupt:")):
        if api not in CORRUPT_APIS:
            raise _bad(rule, f"corrupt applies to {', '.join(sorted(CORRUPT_APIS))}")
        parts = c.split(":")[1:]
        usage = "corrupt is corrupt[:nan|:bitflip][:WORDS], WORDS a positive integer or all"
        if len(parts) > 2 or (parts and parts[0] not in CORRUPT_MODES):
            raise _bad(rule, usage)
        words = parts[1] if len(parts) == 2 else "1"
        if words != "all" and not (words.isdigit() and int(words) > 0):
            raise _bad(rule, usage)
        out.action, out.code = "corrupt", 0
        out.mode = parts[0] if parts else "nan"
        out.words = 0 if words == "all" else int(words)
    elif eq:
        if c in CL_ERROR_CODES:
            out.code = CL_ERROR_CODES[c]
        elif re.fullmatch(r"-\d+", c):
            out.code = int(c)
        else:
            raise _bad(rule, "ACTION must be a negative integer, a CL_* error name, skip or "
                             "corrupt[:nan|:bitflip][:WORDS]")
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
            elif key == "kernel":
                if api not in KERNEL_APIS:
                    raise _bad(rule, "kernel:GLOB applies to entry points that take a cl_kernel "
                                     "(clEnqueueNDRangeKernel, clSetKernelArg, ...)")
                if not value or len(value.encode()) > _GLOB_MAX or any(ch in value for ch in " \t;@,"):
                    raise _bad(rule, f"kernel takes a glob of kernel names (fnmatch: * ? [..]), 1 to {_GLOB_MAX} "
                                     "characters, no spaces")
                out.triggers["kernel"] = value
            else:
                raise _bad(rule, f"unknown trigger {key!r} (nth, every, from, count, p, seed, after, kernel)")
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


def _number(key: str, v) -> str:
    """A trigger's value as the interposer reads it, exactly: p in full (repr: 0.7421875, not
    0.742188), after in plain seconds to the nanosecond (the grammar has no exponent)."""
    if not isinstance(v, float):
        return str(v)
    if key == "after":
        return f"{v:.9f}".rstrip("0").rstrip(".") or "0"
    return repr(v)


def join_spec(rules: list[FaultRule]) -> str:
    """The SOAK_CL_FAULTS value for these rules (codes as numbers)."""
    out = []
    for r in rules:
        trig = ",".join(f"{k}:{_number(k, v)}" for k, v in r.triggers.items())
        out.append(f"{r.api}={r.action_text}" + (f"@{trig}" if trig else ""))
    return ";".join(out)

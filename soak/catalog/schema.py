"""The fault-catalog schema that soak ships.

A catalog is a folder of YAML files.  Each file holds one entry (a mapping)
or a list of entries.  An entry:

    id: mnn-2502-glm6b-queue-lost        # [a-z0-9][a-z0-9._-]*, unique in the catalog
    title: one line
    description: what is seen, in words
    severity: critical | high | medium | low | info
    reports: [https://github.com/alibaba/MNN/issues/2502]   # optional: the public reports it rests on
    generic: false                       # optional: true for a class of failure (any crash)
    match:                               # the symptom (see MATCH_KEYS); keys of one mapping are ANDed
      kind: cl_error
      cl_code: [-36, CL_INVALID_COMMAND_QUEUE]
      any: [{info: Raster}, {log: 'enqueue write error:-36'}]
    applies_to:                          # optional: the context (see APPLIES_KEYS); all must fit
      model_params: {min: 5B, max: 7B}
      gpu_vendor: '(?i)nvidia|amd'
      mnn_version: '<2.6.2'
    remedy:
      cause: why it happens
      workaround: what to do now          # optional
      fixed_in: MNN 3.1.4 (PR #3511)     # optional
      references: [https://github.com/alibaba/MNN/issues/2502]

An entry may instead list `benign` probes: OpenCL queries an engine makes
on purpose and that fail on some vendors' drivers without harm, e.g. MNN's
`clGetDeviceInfo` of an extension parameter NVIDIA does not support (-30).
A probe fits an interposer record (`cl_call_error`, not injected) when api,
code and param_name fit and the run's OpenCL vendor or platform matches:

    benign:
      - {api: clGetDeviceInfo, param_name: CL_DEVICE_HALF_FP_CONFIG, code: -30, vendor: '(?i)nvidia'}

Such findings are listed as benign, not as findings, and start no cause.

A finding that fires `match` but not `applies_to` is a *near miss*.  A
context value the run does not record (e.g. no GPU driver in the manifest)
neither fits nor fails: the match is reported with that field as unknown.

The validator is `soak.catalog._validate`; it reports file, line and what is
wrong for every problem, and `soak.catalog.loader` raises CatalogInvalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from soak.catalog import match_keys
from soak.catalog._conditions import Cond
from soak import fault_kinds
from soak.phases import FAULT_PHASES

ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,79}$")

SEVERITIES, SEVERITY_RANK = fault_kinds.SEVERITIES, fault_kinds.SEVERITY_RANK  # worst first

# the kinds an entry may match: every fault kind of soak.fault_kinds
FAULT_KINDS = fault_kinds.FAULT_KINDS
PHASES = FAULT_PHASES
OSES = ("android", "linux", "windows", "macos")
BACKENDS = ("cpu", "opencl", "vulkan", "metal", "cuda", "opengl")
PRECISIONS = ("low", "normal", "high")
MEMORY_MODES = ("low", "normal", "high")
# MNN's OpenCL `thread_num` bits (MNNForwardType.h:64-81, research §2.2)
THREAD_NUM_BITS = {
    "tuning_none": 1, "tuning_heavy": 2, "tuning_wide": 4, "tuning_normal": 8,
    "tuning_fast": 16, "buffer": 64, "image": 128, "record_op": 256, "record_batch": 512,
}

ENTRY_KEYS = {
    "id": "unique id, [a-z0-9][a-z0-9._-]*",
    "title": "one line",
    "description": "what is seen",
    "severity": "one of " + ", ".join(SEVERITIES),
    "reports": "list of URLs of the public reports (issues, PRs) the entry rests on",
    "benign": "list of benign probes {api, param_name, code, vendor, platform} (see BENIGN_KEYS)",
    "generic": "true: a class of failure (any crash, any hang), not one known fault; "
               "findings it matches keep their signature as their identity",
    "match": "the symptom: a mapping of MATCH_KEYS",
    "applies_to": "the context: a mapping of APPLIES_KEYS",
    "remedy": "cause, workaround, fixed_in, references",
}
REQUIRED_ENTRY_KEYS = ("id", "title", "description", "severity", "match", "remedy")

# key -> what the value is (used in error messages and `soak catalog show`): soak.catalog.match_keys
MATCH_KEYS = {k.name: k.doc for k in match_keys.KEYS.values()}

APPLIES_KEYS = {
    "model_params": "{min, max}: parameter count, number or 0.5B / 500M",
    "model_family": "regex over the model family (case-insensitive)",
    "backend": "requested backend(s): " + ", ".join(BACKENDS),
    "backend_actual": "backend(s) actually used",
    "precision": "precision(s): " + ", ".join(PRECISIONS),
    "memory": "memory mode(s): " + ", ".join(MEMORY_MODES),
    "thread_num": "thread_num value(s), e.g. 68",
    "thread_num_mode": "OpenCL thread_num bit(s) set: " + ", ".join(THREAD_NUM_BITS),
    "gpu_vendor": "regex over the OpenCL vendor (case-insensitive)",
    "gpu_model": "regex over the OpenCL device name (case-insensitive)",
    "driver_version": "version spec, e.g. '>=535, <560'",
    "mnn_version": "version spec, e.g. '<3.1.4'",
    "os": "OS(es): " + ", ".join(OSES),
}

BENIGN_KEYS = {
    "api": "OpenCL API name of the probe (clGetDeviceInfo, clGetPlatformInfo, ...) (required)",
    "param_name": "regex over the queried param's name (fullmatch), e.g. CL_DEVICE_HALF_FP_CONFIG",
    "code": "the CL error code(s) it returns, number or name (required)",
    "vendor": "regex over the OpenCL device vendor (case-insensitive)",
    "platform": "regex over the OpenCL platform name (case-insensitive)",
}

REMEDY_KEYS = {
    "cause": "why it happens (required)",
    "workaround": "what to do now",
    "fixed_in": "version or PR that fixes it",
    "references": "list of URLs (issue links)",
}


@dataclass(frozen=True)
class VersionSpec:
    """Comma-separated clauses `>=3.5.0, <3.6.1` (ops: >= <= > < == !=)."""

    text: str
    clauses: tuple[tuple[str, tuple[int, ...]], ...]

    def contains(self, version: tuple[int, ...]) -> bool:
        for op, ref in self.clauses:
            a, b = _pad(version, ref)
            ok = {">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b,
                  "==": a == b, "!=": a != b}[op]
            if not ok:
                return False
        return True


_VERSION_RE = re.compile(r"(\d+(?:\.\d+)*)")
_CLAUSE_RE = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*v?(\d+(?:\.\d+)*)\s*$")


def parse_version(text: object) -> tuple[int, ...] | None:
    """'3.6.1-87', 'v2.8.1', '580.159.04' -> ints; None when there is no number."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        return None
    m = _VERSION_RE.search(text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def parse_version_spec(text: str) -> VersionSpec:
    clauses = []
    for part in str(text).split(","):
        m = _CLAUSE_RE.match(part)
        if not m:
            raise ValueError(f"bad version clause {part.strip()!r} (want e.g. '>=3.5.0, <3.6.1')")
        clauses.append((m.group(1) or "==", tuple(int(p) for p in m.group(2).split("."))))
    return VersionSpec(str(text), tuple(clauses))


def _pad(a: tuple[int, ...], b: tuple[int, ...]):
    n = max(len(a), len(b))
    return a + (0,) * (n - len(a)), b + (0,) * (n - len(b))


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kKmMbBtT]?)\s*$")
_SIZE_MULT = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_param_count(value: object) -> float | None:
    """600000000, 6e8, '0.6B', '600M' -> 6e8; None if not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return float(m.group(1)) * _SIZE_MULT[m.group(2).lower()]
    return None


def human_params(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, mult in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= mult:
            return f"{n / mult:.3g}{unit}"
    return f"{n:.0f}"


@dataclass(frozen=True)
class Remedy:
    cause: str
    workaround: str | None = None
    fixed_in: str | None = None
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class AppliesTo:
    """Each field: None = any.  Sets are any-of; regexes are searched."""

    model_params: tuple[float | None, float | None] | None = None
    model_family: re.Pattern | None = None
    backend: frozenset[str] | None = None
    backend_actual: frozenset[str] | None = None
    precision: frozenset[str] | None = None
    memory: frozenset[str] | None = None
    thread_num: frozenset[int] | None = None
    thread_num_mode: frozenset[str] | None = None
    gpu_vendor: re.Pattern | None = None
    gpu_model: re.Pattern | None = None
    driver_version: VersionSpec | None = None
    mnn_version: VersionSpec | None = None
    os: frozenset[str] | None = None

    def constrained(self) -> list[str]:
        return [k for k in APPLIES_KEYS if getattr(self, k) is not None]


@dataclass(frozen=True)
class BenignProbe:
    api: str
    codes: frozenset[int]
    param_name: re.Pattern | None = None
    vendor: re.Pattern | None = None
    platform: re.Pattern | None = None

    def fits(self, api, code, param_name, vendor: str | None, platform: str | None) -> bool:
        if api != self.api or code not in self.codes:
            return False
        if self.param_name is not None and not (isinstance(param_name, str) and self.param_name.fullmatch(param_name)):
            return False
        if self.vendor is not None and not (vendor and self.vendor.search(vendor)):
            return False
        if self.platform is not None and not (platform and self.platform.search(platform)):
            return False
        return True


@dataclass(frozen=True)
class Entry:
    id: str
    title: str
    description: str
    severity: str
    match: Cond
    applies_to: AppliesTo
    remedy: Remedy
    reports: tuple[str, ...] = ()
    generic: bool = False
    benign: tuple[BenignProbe, ...] = ()
    source: str = ""          # file:line of the entry
    raw: dict = field(default_factory=dict, compare=False, repr=False)  # as written, for `show`
    specificity: int = 0      # number of match leaves + context constraints

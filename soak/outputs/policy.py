"""Gate policy: a small TOML file (read with tomllib), validated on load.

    # soak gate policy
    [gate]
    name = "nightly-opencl"        # JUnit suite name (default: the file name)
    required_backend = "opencl"    # a silent CPU fallback fails the gate
    min_iterations = 100           # a run that stopped short fails

    [errors]                       # faults from fault events / interposer records
    max_count = 0                  # all faults not allowed as known
    max_rate = 0.01                # faults per iteration
    allow = ["soak-kv-map-null", "sig-1d483f8d1fea"]   # fault ids or signatures allowed as known
    allow_all_known = false        # every fault the catalog knows (non-generic match) is allowed

    [errors.severity]              # per severity (critical, high, medium, low, info)
    critical = { max_count = 0 }
    high = { max_rate = 0.001 }

    [errors.fault]                 # per fault id or signature
    "mnn-4782-memory-underreported-os-kill" = { max_count = 0 }

    [memory]
    max_leak_slope = "256KiB"      # per iteration, for a series whose verdict is "leak" (0: any leak fails)
    max_leak_slope_per_hour = "1GiB"
    max_kept_after_reset = "64MiB" # a ratchet / retained growth up to this passes (default: none passes)
    series = ["rss", "pss", "gpu_live_bytes"]   # default: all four
    require_return = true          # memory must come back after each recovery

    [recovery]
    min_rate = 0.9                 # recovered attempts / attempts
    min_score = 50                 # recovery score, 0..100

    [perf]
    max_tps_regression_pct = 10    # decode tok/s drop against --baseline
    max_drift_pct = 20             # decode tok/s lost over the run itself

    [oracle]                       # teacher-forced turns against a reference (soak run --reference)
    max_wrong = 0                  # turns with wrong_output
    max_wrong_rate = 0.0           # (wrong + non-finite) / checked turns
    max_nonfinite = 0              # turns with NaN/inf logits (nonfinite_logits)
    max_kl_drift = 0.001           # growth of the per-turn mean KL (nats) over the run, when it is growing
    required = true                # a run with no checked turn fails (else the section is skipped)

A policy with an [oracle] section judges wrong_output and nonfinite_logits there alone (its limits
are their allowance); without one they count in [errors] as any fault.  The default policy has
[oracle] max_wrong = 0, max_nonfinite = 0: a checked run with a wrong turn fails it.

Every rule is optional; a section that is absent adds no rule, but a
policy with no rule at all is refused (it would pass anything).  Unknown
keys, NaN or infinite numbers, and strings where a boolean belongs are
refused (a typo must not silently disable a rule).  Every gate also judges
`run.complete` (soak.outputs.gate).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from soak.errors import BadInput
from soak.fault_kinds import SEVERITIES
SERIES = ("rss", "uss", "pss", "gpu_live_bytes")
_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")

_KEYS = {
    "gate": {"name", "required_backend", "min_iterations"},
    "errors": {"max_count", "max_rate", "allow", "allow_all_known", "severity", "fault"},
    "memory": {"max_leak_slope", "max_leak_slope_per_hour", "max_kept_after_reset", "series", "require_return"},
    "recovery": {"min_rate", "min_score"},
    "perf": {"max_tps_regression_pct", "max_drift_pct"},
    "oracle": {"max_wrong", "max_wrong_rate", "max_nonfinite", "max_kl_drift", "required"},
}
_LIMIT_KEYS = {"max_count", "max_rate"}


@dataclass
class Limit:
    max_count: int | None = None
    max_rate: float | None = None


@dataclass
class Policy:
    path: str = "<default>"
    name: str = "soak-gate"
    required_backend: str | None = None
    min_iterations: int | None = None
    errors: Limit | None = None
    allow: list[str] = field(default_factory=list)
    allow_all_known: bool = False
    by_severity: dict[str, Limit] = field(default_factory=dict)
    by_fault: dict[str, Limit] = field(default_factory=dict)
    max_leak_slope: float | None = None
    max_leak_slope_per_hour: float | None = None
    max_kept_after_reset: float | None = None
    series: tuple[str, ...] = SERIES
    require_return: bool = False
    min_recovery_rate: float | None = None
    min_recovery_score: float | None = None
    max_tps_regression_pct: float | None = None
    max_drift_pct: float | None = None
    oracle: bool = False                     # the policy has an [oracle] section: it judges the oracle's faults
    max_wrong: int | None = None
    max_wrong_rate: float | None = None
    max_nonfinite: int | None = None
    max_kl_drift: float | None = None
    oracle_required: bool = False


def parse_size(value, where: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a size (give a finite number of bytes)")
        if value < 0:
            raise ValueError(f"{where}: must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _UNITS:
            return float(m.group(1)) * _UNITS[m.group(2).lower()]
    raise ValueError(f"{where}: {value!r} is not a size (e.g. 262144, \"256KiB\", \"1.5MiB\")")


def _number(v, where: str, integer: bool = False, lo: float = 0, hi: float | None = None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise ValueError(f"{where}: expected {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{where}: {v!r} is not a finite number")
    if v < lo or (hi is not None and v > hi):
        raise ValueError(f"{where}: {v} is outside {lo}..{hi if hi is not None else 'inf'}")
    return v


def _limit(table, where: str) -> Limit:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table like {{ max_count = 0 }}")
    extra = set(table) - _LIMIT_KEYS
    if extra:
        raise ValueError(f"{where}: unknown key(s) {sorted(extra)}; allowed: max_count, max_rate")
    if not table:
        raise ValueError(f"{where}: give max_count and/or max_rate")
    return Limit(max_count=_number(table["max_count"], f"{where}.max_count", integer=True) if "max_count" in table else None,
                 max_rate=_number(table["max_rate"], f"{where}.max_rate") if "max_rate" in table else None)


def _check_keys(data: dict) -> None:
    extra = set(data) - set(_KEYS) - {"version"}
    if extra:
        raise ValueError(f"unknown section(s) {sorted(extra)}; allowed: {sorted(_KEYS)}")
    for section, keys in _KEYS.items():
        if section in data:
            if not isinstance(data[section], dict):
                raise ValueError(f"[{section}] must be a table")
            bad = set(data[section]) - keys
            if bad:
                raise ValueError(f"[{section}]: unknown key(s) {sorted(bad)}; allowed: {sorted(keys)}")


def policy_from_dict(data: dict, path: str = "<policy>") -> Policy:
    _check_keys(data)
    if data.get("version", 1) != 1:
        raise ValueError(f"version {data.get('version')!r} is not supported (this soak reads version 1)")
    p = Policy(path=path, name="soak-gate" if path.startswith("<") else f"soak-gate-{Path(path).stem}")
    g = data.get("gate", {})
    if "name" in g:
        p.name = str(g["name"])
    if "required_backend" in g:
        if g["required_backend"] not in ("cpu", "opencl", "vulkan"):
            raise ValueError("[gate].required_backend: expected \"cpu\", \"opencl\" or \"vulkan\"")
        p.required_backend = g["required_backend"]
    if "min_iterations" in g:
        p.min_iterations = _number(g["min_iterations"], "[gate].min_iterations", integer=True)
    e = data.get("errors", {})
    if "max_count" in e or "max_rate" in e:
        p.errors = _limit({k: e[k] for k in _LIMIT_KEYS if k in e}, "[errors]")
    allow = e.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ValueError("[errors].allow: expected a list of fault ids or signatures")
    p.allow = allow
    p.allow_all_known = _bool(e.get("allow_all_known", False), "[errors].allow_all_known")
    for sev, table in (e.get("severity") or {}).items():
        if sev not in SEVERITIES:
            raise ValueError(f"[errors.severity]: unknown severity {sev!r}; one of {', '.join(SEVERITIES)}")
        p.by_severity[sev] = _limit(table, f"[errors.severity].{sev}")
    for fid, table in (e.get("fault") or {}).items():
        p.by_fault[fid] = _limit(table, f"[errors.fault].{fid!r}")
    m = data.get("memory", {})
    if "max_leak_slope" in m:
        p.max_leak_slope = parse_size(m["max_leak_slope"], "[memory].max_leak_slope")
    if "max_leak_slope_per_hour" in m:
        p.max_leak_slope_per_hour = parse_size(m["max_leak_slope_per_hour"], "[memory].max_leak_slope_per_hour")
    if "series" in m:
        bad = [s for s in m["series"] if s not in SERIES] if isinstance(m["series"], list) else [m["series"]]
        if isinstance(m["series"], list) and not m["series"]:
            raise ValueError("[memory].series: empty; leave it out to judge all four series")
        if bad:
            raise ValueError(f"[memory].series: unknown {bad}; choose from {list(SERIES)}")
        p.series = tuple(m["series"])
    if "max_kept_after_reset" in m:
        p.max_kept_after_reset = parse_size(m["max_kept_after_reset"], "[memory].max_kept_after_reset")
    p.require_return = _bool(m.get("require_return", False), "[memory].require_return")
    r = data.get("recovery", {})
    if "min_rate" in r:
        p.min_recovery_rate = _number(r["min_rate"], "[recovery].min_rate", hi=1)
    if "min_score" in r:
        p.min_recovery_score = _number(r["min_score"], "[recovery].min_score", hi=100)
    f = data.get("perf", {})
    if "max_tps_regression_pct" in f:
        p.max_tps_regression_pct = _number(f["max_tps_regression_pct"], "[perf].max_tps_regression_pct", lo=-100)
    if "max_drift_pct" in f:
        p.max_drift_pct = _number(f["max_drift_pct"], "[perf].max_drift_pct")
    o = data.get("oracle")
    if o is not None:
        p.oracle = True
        if "max_wrong" in o:
            p.max_wrong = _number(o["max_wrong"], "[oracle].max_wrong", integer=True)
        if "max_wrong_rate" in o:
            p.max_wrong_rate = _number(o["max_wrong_rate"], "[oracle].max_wrong_rate", hi=1)
        if "max_nonfinite" in o:
            p.max_nonfinite = _number(o["max_nonfinite"], "[oracle].max_nonfinite", integer=True)
        if "max_kl_drift" in o:
            p.max_kl_drift = _number(o["max_kl_drift"], "[oracle].max_kl_drift")
        p.oracle_required = _bool(o.get("required", False), "[oracle].required")
        if not (has_oracle_rule(p) or p.oracle_required):
            raise ValueError("[oracle] has no rule; give max_wrong, max_wrong_rate, max_nonfinite, max_kl_drift "
                             "or required = true (an empty section would let the oracle's faults pass)")
    if not has_rule(p):
        raise ValueError("the policy has no rule, so it would pass any run; add at least one rule "
                         "(e.g. [errors.severity] critical = { max_count = 0 })")
    return p


def has_rule(p: Policy) -> bool:
    return any((p.required_backend, p.min_iterations is not None, p.errors is not None, p.by_severity, p.by_fault,
                p.max_leak_slope is not None, p.max_leak_slope_per_hour is not None,
                p.max_kept_after_reset is not None, p.require_return, p.min_recovery_rate is not None,
                p.min_recovery_score is not None, p.max_tps_regression_pct is not None,
                p.max_drift_pct is not None, has_oracle_rule(p), p.oracle_required))


def has_oracle_rule(p: Policy) -> bool:
    return any(v is not None for v in (p.max_wrong, p.max_wrong_rate, p.max_nonfinite, p.max_kl_drift))


def _bool(v, where: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{where}: expected true or false, got {v!r}")
    return v


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"gate policy {path} does not exist",
                       hint="write a TOML policy (see `soak gate --help`) or leave out --policy for the default") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read gate policy {path}: {exc}", hint="check the path and its permissions") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"gate policy {path} is not valid TOML: {exc}", hint="fix the TOML syntax") from None
    try:
        return policy_from_dict(data, str(path))
    except ValueError as exc:
        raise BadInput(f"gate policy {path}: {exc}", hint="see `soak gate --help` for the policy format") from None


DEFAULT_POLICY_TEXT = """\
# default gate: no unknown crash or hang, no leak, recoveries work, no wrong answer where one was checked
[errors.severity]
critical = { max_count = 0 }
[memory]
max_leak_slope = 0
[recovery]
min_rate = 1.0
[oracle]
max_wrong = 0
max_nonfinite = 0
"""


def default_policy() -> Policy:
    p = policy_from_dict(tomllib.loads(DEFAULT_POLICY_TEXT), "<default>")
    p.name = "soak-gate-default"
    return p

"""soak as a library: run a soak, gate it, classify it, from Python (a CI test, a notebook).

    import soak

    result = soak.run(demo=True, iterations=40, out=tmp_path)   # a SoakRun
    print(result.run_dir, result.faults, result.seed)
    verdict = soak.gate(result.run_dir, policy="docs/policies/opencl-nightly.toml")
    if not verdict.passed:
        print(verdict.failed)                   # [Rule(name, passed, message, details), ...]
    result.assert_gate()                        # AssertionError naming the failed rules and the folder
    findings = soak.classify(result.run_dir).findings

`soak.run` takes the options of `soak run` as keyword arguments (dashes as underscores:
iterations=, duration="10m", engine="mnn-pip", model=, backend=, seed=, fault_plan=PATH,
out=, run_id=, timeout_respond=, ...) and checks them exactly as the command does.  It is
quiet unless quiet=False.  Bad input raises soak.errors.SoakError (its exit_code and
hint as on the command line); a failing engine is a result (exit_code 1), not an exception.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from soak import errors


@dataclass(frozen=True)
class Rule:
    name: str
    passed: bool
    message: str
    details: tuple[str, ...] = ()
    skipped: bool = False


@dataclass(frozen=True)
class GateResult:
    run_dir: Path
    passed: bool
    rules: tuple[Rule, ...]
    policy: str

    @property
    def failed(self) -> list[Rule]:
        return [r for r in self.rules if not r.passed]

    def __bool__(self) -> bool:
        return self.passed

    def explain(self) -> str:
        """The failed rules and the run folder, for a person (or an AssertionError)."""
        lines = [f"soak gate ({self.policy}) failed for {self.run_dir}:"]
        for r in self.failed:
            lines.append(f"  FAIL {r.name}: {r.message}")
            lines += [f"       {d}" for d in r.details[:5]]
        return "\n".join(lines)


@dataclass(frozen=True)
class ClassifyResult:
    run_dir: Path
    findings: list[dict]

    @property
    def known(self) -> list[dict]:
        return [f for f in self.findings if f.get("known")]

    @property
    def unknown(self) -> list[dict]:
        return [f for f in self.findings if not f.get("known")]


@dataclass
class SoakRun:
    run_dir: Path
    exit_code: int
    summary: dict = field(repr=False)

    @property
    def faults(self) -> int:
        """Fault events (soak.fault_kinds.fault_kind_of): the count the gate and the report use."""
        return int(self.summary.get("faults", 0))

    @property
    def faults_by_kind(self) -> dict[str, int]:
        return dict(self.summary.get("faults_by_kind") or {})

    @property
    def iterations(self) -> int:
        return int(self.summary.get("iterations", 0))

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", 0))

    def gate(self, policy=None, baseline=None, junit=None) -> GateResult:
        return gate(self.run_dir, policy=policy, baseline=baseline, junit=junit)

    def assert_gate(self, policy=None, baseline=None) -> GateResult:
        """Gate the run; AssertionError with the failed rules and the run folder if it fails."""
        result = self.gate(policy, baseline)
        if not result.passed:
            raise AssertionError(result.explain())
        return result

    def classify(self) -> ClassifyResult:
        return classify(self.run_dir)


def _argv(options: dict) -> list[str]:
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    return argv


def run(*, quiet: bool = True, **options) -> SoakRun:
    """Run a soak in this process (the engine runs in its worker subprocess, as always)."""
    from soak.commands import run as run_command
    from soak.judges import run_judged

    if "json" in options or "target" in options or "gate" in options:
        raise errors.BadInput("soak.run: json, target and gate are command-line options",
                              "gate the result with result.gate(policy) or soak.gate(run_dir)")
    parser = argparse.ArgumentParser(prog="soak.run", add_help=False, exit_on_error=False)
    run_command.add_arguments(parser)
    argv = _argv({**options, "quiet": quiet})
    try:
        args = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise errors.BadInput(f"soak.run: bad options {argv}: {exc}",
                              "use the keyword names of `soak run --help` (dashes as underscores)") from None
    cfg = run_command.config_from_args(args)
    cfg.argv = ["<soak.run>", *argv]
    result = run_judged(cfg)
    return SoakRun(Path(result.run_dir), int(result.exit_code), result.summary)


def gate(run_dir, policy=None, baseline=None, junit=None) -> GateResult:
    """Judge a finished run folder: policy is a TOML path (None: the built-in gate).  JUnit is
    written only when junit names a file."""
    from soak.outputs.gate import judge
    from soak.outputs.policy import default_policy, load_policy

    pol = load_policy(policy) if policy else default_policy()
    passed, results, _ = judge(run_dir, pol, baseline, Path(junit) if junit else None)
    rules = tuple(Rule(r.name, r.passed, r.message, tuple(r.details), r.skipped) for r in results)
    return GateResult(Path(run_dir), passed, rules, str(policy) if policy else "built-in gate")


def classify(run_dir) -> ClassifyResult:
    """Classify a run's faults against the fault catalog (writes classification.json)."""
    from soak.catalog.classify import classify_run

    result = classify_run(run_dir)
    return ClassifyResult(Path(run_dir), list(result.get("findings") or []))

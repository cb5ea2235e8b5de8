"""The README.md of a bundle: what failed, how often, on what, the command that replays it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from soak.analysis.loaded_run import RunFolder
from soak.outputs._findings import finding_label
from soak.outputs._redact import Redactor
from soak.run_folder import CLASSIFICATION, ENGINE_LOG, EVENTS, MANIFEST, SUMMARY, TEST_ENGINE, VERDICTS

FILES = f"""\
    README.md           this file
    bundle.json         what was selected: findings, occurrences, replay iteration, redactions
    {MANIFEST:<20}the run's manifest
    environment.json    OpenCL platform/device/driver/extensions/limits, host or phone,
                        engine libraries with hashes, model config and size, seed
    {CLASSIFICATION}, {VERDICTS}, {SUMMARY}
    {EVENTS:<20}the event log (whole, or every non-iteration event plus the
                        iterations around each occurrence when the log is large)
    engine_log/         {ENGINE_LOG} bytes around each occurrence (iteration and the 3 before)
    cl_trace/           interposer records
    series/             memory.csv and perf.csv, one row per sample / iteration
    prompts.jsonl       exact prompts of the failing iterations and of those before them
    model/config.json   the model's config, when it was readable
    {TEST_ENGINE:<20}the test engine's config and fault plan (test-engine runs)
    oracle/             reference.jsonl: the reference of a --reference run, when small enough"""


def render_readme(run: RunFolder, selected: list[dict], env: dict, replay_iter: int | None, name: str,
            redactor: Redactor, verdicts: dict | None, oracle: dict | None = None) -> str:
    oc = env.get("opencl") or {}
    host = env.get("host") or {}
    lines = [f"# soak bug report: run {run.run_id}", ""]
    lines += ["## What failed", ""]
    if not selected:
        lines.append("No fault was recorded in this run (the bundle still holds its environment and series).")
    for f in selected:
        iters = f"iterations {f.get('first_iteration')}..{f.get('last_iteration')}"
        lines.append(f"- **{f.get('title') or f.get('signature_text')}** — `{finding_label(f)}` "
                     f"(signature `{f.get('signature')}`, {f.get('severity')}, "
                     f"{'known' if f.get('known') else 'not in the catalog'}): "
                     f"{f.get('events') or len(f.get('occurrences') or [])} occurrence(s) in "
                     f"{run.iteration_count} iterations, {iters}")
        lines.append(f"  - signature text: `{f.get('signature_text')}`")
        for m in (f.get("matches") or [])[:1]:
            rem = m.get("remedy") or {}
            if rem.get("workaround"):
                lines.append(f"  - known workaround: {str(rem['workaround']).strip()}")
            for ref in rem.get("references") or []:
                lines.append(f"  - reference: {ref}")
    if verdicts:
        mem = verdicts.get("memory", {})
        if mem.get("leaking_series"):
            lines.append(f"- memory leak verdict on {', '.join(mem['leaking_series'])}: see {VERDICTS} "
                         "and series/memory.csv")
    lines += _oracle_lines(verdicts, oracle, env)
    lines += ["", "## On what", ""]
    lines.append(f"- engine: {env.get('engine_name') or env.get('engine')}; backend requested "
                 f"{env.get('backend_requested')}, actually ran on {env.get('backend_actual')}")
    if oc:
        lines.append(f"- OpenCL: {oc.get('platform') or oc.get('platform_name')} / {oc.get('device') or oc.get('device_name')} / "
                     f"driver {oc.get('driver_version')}")
    if host:
        lines.append("- host: " + ", ".join(f"{k}={v}" for k, v in host.items() if not isinstance(v, (dict, list))))
    if env.get("mnn_version"):
        lines.append(f"- MNN {env['mnn_version']}")
    for lib, digest in (env.get("libraries") or {}).items() if isinstance(env.get("libraries"), dict) else []:
        lines.append(f"- library {Path(lib).name}: sha256 {digest}")
    lines.append(f"- model: {json.dumps(env.get('model'))}"
                 + (f", {env['model_size_bytes']} bytes" if env.get("model_size_bytes") else ""))
    lines.append(f"- seed: {env.get('seed')}")
    lines += ["", "## Replay", ""]
    if redactor.prompts:
        lines.append("Prompts were redacted (--redact-prompts), so this bundle cannot replay the failure; "
                     "prompts.jsonl keeps each prompt's length and hash.")
    elif replay_iter is not None:
        lines.append("Re-run the recorded prompts of the first failing iteration on your engine and "
                     "check the same signature comes back:")
        lines += ["", "```", f"soak replay {shlex.quote(name)} --iteration {replay_iter}", "```", "",
                  "(`--engine-lib PATH` / `--model PATH` point it at your own build.)"]
    else:
        lines.append("No failing iteration to replay (the faults happened at load or are memory/perf verdicts); "
                     f"re-run the soak with the same seed: `soak run ... --seed {env.get('seed')}` "
                     f"(full command in {MANIFEST}).")
    cmd = run.manifest.get("command")
    if isinstance(cmd, list):
        lines += ["", "Original command:", "", "```", redactor.text(shlex.join(map(str, cmd))), "```"]
    lines += ["", "## Files", "", FILES, ""]
    if redactor.serials:
        lines.append("Device serial numbers were replaced by SERIAL-<hash> (--redact-serials).")
    return "\n".join(lines) + "\n"


def _oracle_lines(verdicts: dict | None, oracle: dict | None, env: dict) -> list[str]:
    """A --reference run: what the teacher-forced turns showed and the reference they were checked against."""
    if oracle is None:
        return []
    v = (verdicts or {}).get("oracle") or {}
    out = ["", "## Wrong answers (teacher-forced against a reference)", ""]
    if v:
        out.append(f"- {v.get('checked')} turns checked, {v.get('wrong')} wrong, {v.get('nonfinite')} with NaN/inf "
                   f"logits" + (f"; first wrong at iteration {v['first_wrong_iteration']}"
                                if v.get("first_wrong_iteration") is not None else "")
                   + f" (thresholds: {json.dumps(v.get('thresholds'))}; per turn: {VERDICTS} `oracle`)")
    key = oracle.get("key") or {}
    out.append(f"- reference: `{oracle.get('reference')}`, made by {json.dumps(oracle.get('oracle'))}; key: model "
               f"sha256 {key.get('model_sha256')}, seed {key.get('seed')}, soak {key.get('soak_version')}")
    if oracle.get("included"):
        out.append(f"- the reference is in this bundle: `{oracle['included']}` ({oracle.get('bytes')} bytes)")
    elif oracle.get("missing"):
        out.append(f"- the reference is not in this bundle: {oracle['missing']}")
    else:
        out.append(f"- the reference is not in this bundle ({oracle.get('bytes')} bytes); ask for it: sha256 "
                   f"{oracle.get('sha256')}")
    out.append(f"- re-check: `soak run --seed {env.get('seed')} --reference REFERENCE ...` (the same seeded workload; "
               "`soak replay` runs the recorded turns free, without the oracle)")
    return out

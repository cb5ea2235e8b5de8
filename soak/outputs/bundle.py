"""Bug-report bundle: one .tar.gz a GPU vendor or MNN maintainer can act on.

Layout (all under one folder `soak-bundle-<run-id>/`, itself a valid run
folder, so `soak replay BUNDLE`, `soak gate` and `soak report` read it):

    README.md           what failed, how often, on what, the command that replays it
    bundle.json         what was selected: findings, occurrences, replay iteration, redactions
    manifest.json       the run's manifest
    environment.json    OpenCL platform/device/driver/extensions/limits, host or phone,
                        engine libraries with hashes, model config and size, seed
    classification.json, verdicts.json, summary.json
    events.jsonl        the event log (whole, or every non-iteration event plus the
                        iterations around each occurrence when the log is large)
    engine_log/occurrence-NNN-iter-I.log   engine.log bytes around each occurrence
    cl_trace/...        interposer records
    series/memory.csv, series/perf.csv
    prompts.jsonl       exact prompts of the failing iterations and of those before them
    model/config.json   the model's config, when it is readable here
    test_engine.json    the test engine's config and fault plan (test runs)
    oracle/reference.jsonl   the reference a --reference run was checked against, when it is here
                        and at most REFERENCE_LIMIT bytes; bundle.json `oracle` always names it
                        (path, key, size, sha256), so a larger one can be asked for and verified
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tarfile
import time
from pathlib import Path

from soak import run_folder
from soak.analysis.loaded_run import RunFolder
from soak.errors import BadInput
from soak.outputs._bundle_readme import render_readme
from soak.outputs._findings import DERIVED_KINDS, classification, finding_label, findings_with_events, open_run
from soak.outputs._redact import Redactor
from soak.outputs.environment import environment, model_config_path

BUNDLE_VERSION = 1
FULL_EVENTS_LIMIT = 32 << 20     # whole events.jsonl up to this size
TRACE_LIMIT = 64 << 20           # per cl_trace file
LOG_WINDOW_LIMIT = 1 << 20       # per engine-log window
ITERATIONS_BEFORE = 3            # iterations kept before each occurrence (besides its conversation)
OCCURRENCES_PER_FINDING = 10     # the first 5 and the last 5
REFERENCE_LIMIT = 8 << 20        # a --reference run's reference file is bundled up to this size (~70k steps)
REFERENCE_FILE = "oracle/reference.jsonl"   # not at the top: the bundle is a run, not a `soak reference` folder


def _select(findings: list[dict], fault: str | None) -> list[dict]:
    if fault is None:
        chosen = [f for f in findings if f.get("occurrences") or f.get("kind") in DERIVED_KINDS]
        return chosen
    chosen = [f for f in findings if fault in (f.get("fault_id"), f.get("signature"))]
    if not chosen:
        have = sorted({finding_label(f) for f in findings} | {f.get("signature") for f in findings if f.get("signature")})
        raise BadInput(f"no finding with fault id or signature {fault!r} in this run",
                       hint="choose one of: " + (", ".join(have) if have else "(the run has no findings)"))
    return chosen


def _occurrences(f: dict) -> list[dict]:
    occ = f.get("occurrences") or []
    if len(occ) <= OCCURRENCES_PER_FINDING:
        return occ
    half = OCCURRENCES_PER_FINDING // 2
    return occ[:half] + occ[-half:]


def _window_iterations(run: RunFolder, failing: set[int]) -> dict[int, dict]:
    """Failing iterations, the turns before them in their conversation, and a
    few before that: {i: iteration event}.  One streaming pass that holds only
    the current conversation and the last few iterations."""
    keep: dict[int, dict] = {}
    recent: list[dict] = []          # the last ITERATIONS_BEFORE + 1 iterations
    conversation: list[dict] = []    # the current conversation so far
    for e in run.stream({"iteration"}):
        i = e.get("i")
        if not isinstance(i, int) or isinstance(i, bool):
            continue
        if conversation and (_key(conversation[-1]) != _key(e)):
            conversation = []
        conversation.append(e)
        recent.append(e)
        if len(recent) > ITERATIONS_BEFORE + 1:
            recent.pop(0)
        if i in failing:
            for x in recent:
                if x["i"] >= i - ITERATIONS_BEFORE:
                    keep[x["i"]] = x
            for x in conversation:
                if x["i"] <= i:
                    keep[x["i"]] = x
    return keep


def _key(e: dict):
    return (_hashable(e.get("conversation")), _hashable(e.get("worker_generation")))


def _hashable(v):
    return v if isinstance(v, (int, str, float, type(None))) else repr(v)


def _spooled(lines) -> "tempfile.TemporaryFile":
    """Text lines written to a temporary file as they come (a long run's log does not fit in memory)."""
    import tempfile

    fh = tempfile.TemporaryFile()
    write = fh.write
    for line in lines:
        write(line.encode("utf-8", "surrogatepass"))
    fh.seek(0)
    return fh


def _csv_file(rows, header: list[str]):
    """The rows as CSV in a temporary file (a long run's series do not fit in memory)."""
    import tempfile

    fh = tempfile.TemporaryFile()
    text = io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=True)
    w = csv.writer(text, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    text.flush()
    text.detach()
    fh.seek(0)
    return fh


def _oracle_reference(run: RunFolder, files: dict) -> dict | None:
    """What a --reference run was checked against: the reference's path and key (model hash, seed,
    workload, soak version), the oracle's configuration, its size and sha256; the file itself goes in
    when it is on this machine and at most REFERENCE_LIMIT bytes (a night's reference can be tens of
    MB: the key and hash let the receiver ask for it and know it is the same one)."""
    info = run.manifest.get("oracle")
    if not isinstance(info, dict) or info.get("mode") != "check":
        return None
    ref = info.get("reference")
    out = {"reference": ref, "key": info.get("key"), "oracle": info.get("oracle"), "every": info.get("every"),
           "thresholds": info.get("thresholds"), "included": None}
    path = Path(ref) if isinstance(ref, str) and ref else None
    if path is None or not path.is_file():
        out["missing"] = "the reference file is not on this machine"
        return out
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    out.update(bytes=size, sha256=digest.hexdigest())
    if size <= REFERENCE_LIMIT:
        files[REFERENCE_FILE] = path.read_bytes()
        out["included"] = REFERENCE_FILE
    return out


def _replay_iteration(selected: list[dict]) -> int | None:
    firsts = [o.get("iteration") for f in selected for o in f.get("occurrences") or []
              if isinstance(o.get("iteration"), int) and o.get("phase") != "load"]
    return min(firsts) if firsts else None


def make_bundle(run_dir: str | Path, fault: str | None = None, out: str | Path | None = None,
                redact_prompts: bool = False, redact_serials: bool = False) -> Path:
    run = open_run(run_dir)
    findings = findings_with_events(run)
    selected = _select(findings, fault)
    redactor = Redactor(run, redact_prompts, redact_serials)
    occurrences = [(f, o) for f in selected for o in _occurrences(f)]
    failing = {o["iteration"] for _, o in occurrences if isinstance(o.get("iteration"), int)}
    kept = _window_iterations(run, failing)
    keep_iters = set(kept)
    replay_iter = _replay_iteration(selected)

    top = f"soak-bundle-{re.sub(r'[^A-Za-z0-9._-]', '_', run.run_id)}"
    out = Path(out) if out else Path.cwd() / f"{top}{'-' + re.sub(r'[^A-Za-z0-9._-]', '_', fault) if fault else ''}.tar.gz"
    files: dict[str, bytes] = {}

    def put_text(name: str, text: str) -> None:
        files[name] = redactor.text(text).encode("utf-8", "surrogatepass")

    def put_json(name: str, data) -> None:
        put_text(name, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")

    env = environment(run)
    put_json(run_folder.MANIFEST, run.manifest)
    put_json("environment.json", env)
    put_json(run_folder.CLASSIFICATION, classification(run))
    verdicts = run_folder.read_json(run.path / run_folder.VERDICTS)
    if verdicts is None or "oracle" not in verdicts:   # none, or written by a soak without the oracle's verdict
        from soak.analysis.verdicts import compute_verdicts

        verdicts = compute_verdicts(run, write=False)
    put_json(run_folder.VERDICTS, verdicts)
    if run.summary:
        put_json(run_folder.SUMMARY, run.summary)
    for extra in (run_folder.TEST_ENGINE,):
        if (run.path / extra).is_file():
            put_text(extra, (run.path / extra).read_text(encoding="utf-8", errors="replace"))

    # events: the whole log if small, else everything but the iterations outside the windows
    size = (run.path / run_folder.EVENTS).stat().st_size
    whole = size <= FULL_EVENTS_LIMIT
    files[run_folder.EVENTS] = _spooled(redactor.text(json.dumps(redactor.event(e), ensure_ascii=False)) + "\n"
                                     for e in run.stream()
                                     if whole or e.get("event") != "iteration" or e.get("i") in keep_iters)

    # engine-log windows around each occurrence
    spans = {i: _span(e.get("log_span")) for i, e in kept.items()}
    load_spans = [_span(e.get("log_span")) for e in run.of("load") if _span(e.get("log_span"))]
    occ_index = []
    for k, (f, o) in enumerate(occurrences):
        it = o.get("iteration")
        if isinstance(it, int) and spans.get(it):
            first = next((spans[j] for j in range(max(0, it - ITERATIONS_BEFORE), it + 1) if spans.get(j)), spans[it])
            start, end = first[0], spans[it][1]
        elif load_spans:
            start, end = load_spans[-1]
        else:
            start, end = 0, 0
        if end - start > LOG_WINDOW_LIMIT:
            start = end - LOG_WINDOW_LIMIT
        name = f"engine_log/occurrence-{k:03d}-iter-{it if it is not None else 'load'}.log"
        data = run.log_bytes(start, end, LOG_WINDOW_LIMIT)
        context = [f"# soak: {run_folder.ENGINE_LOG} bytes {start}..{end} around {finding_label(f)} ({o.get('kind')}) at iteration {it}"]
        for key in ("line", "last_lines", "code", "name", "info", "signal"):
            if o.get(key) not in (None, [], ""):
                context.append(f"# {key}: {o.get(key)}")
        put_text(name, "\n".join(context) + "\n" + data.decode("utf-8", "replace"))
        occ_index.append({"file": name, "finding": finding_label(f), "signature": f.get("signature"),
                          "kind": o.get("kind"), "phase": o.get("phase"), "iteration": it, "seq": o.get("seq"),
                          "log_span": [start, end]})

    # interposer records
    for p in run.cl_trace_files():
        data = p.read_bytes()[:TRACE_LIMIT] if p.stat().st_size <= TRACE_LIMIT else _tail(p, TRACE_LIMIT)
        if redactor.serials and p.suffix == ".jsonl":
            data = redactor.text(data.decode("utf-8", "replace")).encode("utf-8")
        files[f"cl_trace/{p.name}"] = data

    # series
    mem_rows = ([e.get("seq"), e.get("t"), e.get("iteration"), e.get("source"), e.get("generation"),
                 e.get("rss"), e.get("uss"), e.get("pss"), e.get("gpu_live_bytes")] for e in run.stream({"memory"}))
    files["series/memory.csv"] = _csv_file(mem_rows, ["seq", "t", "iteration", "source", "generation", "rss", "uss",
                                                      "pss", "gpu_live_bytes"])
    perf_rows = ([e.get("i"), e.get("t"), e.get("ok"), e.get("decode_tps"), e.get("prefill_tps"), e.get("wall_s"),
                  e.get("prefill_us"), e.get("decode_us"), e.get("prompt_tokens"), e.get("generated_tokens"),
                  e.get("context_tokens"), "+".join(_texts(e.get("failures")))] for e in run.stream({"iteration"}))
    files["series/perf.csv"] = _csv_file(perf_rows, ["i", "t", "ok", "decode_tps", "prefill_tps", "wall_s", "prefill_us",
                                                "decode_us", "prompt_tokens", "generated_tokens", "context_tokens",
                                                "failures"])
    # prompts
    prompt_lines = []
    for i in sorted(kept):
        e = kept[i]
        r = redactor.event(e)
        prompt_lines.append(json.dumps({"i": e["i"], "conversation": e.get("conversation"), "turn": e.get("turn"),
                                            "failing": e["i"] in failing, "max_new_tokens": e.get("max_new_tokens"),
                                            "prompt": r.get("prompt")}, ensure_ascii=False))
    put_text("prompts.jsonl", "\n".join(prompt_lines) + ("\n" if prompt_lines else ""))
    cfg = model_config_path(run)
    if cfg is not None:
        put_text("model/config.json", cfg.read_text(encoding="utf-8", errors="replace"))

    oracle = _oracle_reference(run, files)
    # `soak repro`'s reproducers, when the run has them (they hold prompts: not with --redact-prompts)
    repro_files = {} if redact_prompts else _repro_files(run.path)
    for name, data in repro_files.items():
        put_text(name, data)

    meta = {"version": BUNDLE_VERSION, "run_id": run.run_id, "seed": run.seed, "created": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "fault": fault,
            "findings": [{k: f.get(k) for k in ("fault_id", "signature", "signature_text", "title", "severity",
                                                  "known", "kind", "phase", "events", "first_iteration",
                                                  "last_iteration")} for f in selected],
            "occurrences": occ_index, "replay_iteration": None if redact_prompts else replay_iter,
            "redacted": {"prompts": redact_prompts, "serials": bool(redactor.serials)},
            "events": "whole" if whole else "windows", "oracle": oracle,
            "repro": sorted(repro_files) or None}
    put_json("bundle.json", meta)
    put_text("README.md", render_readme(run, selected, env, replay_iter, out.name, redactor, verdicts, oracle))
    _write_tar(out, top, files)
    return out


REPRO_FILE_LIMIT = 1 << 20  # bytes of one reproducer file in a bundle (prompts can be long)


def _repro_files(run_dir: Path) -> dict[str, str]:
    """RUN/repro/ without its run folders (reliability runs, replays): the reproducers, their
    scripts, configurations, results and standalone MNN files."""
    root = run_dir / run_folder.REPRO
    if not root.is_dir():
        return {}
    skip = {run_folder.REPRO_RUNS, run_folder.REPRO_WORK, run_folder.REPRO_REPLAYS}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(run_dir)
        if any(part in skip for part in rel.parts) or not p.is_file() or p.is_symlink():
            continue
        if p.stat().st_size > REPRO_FILE_LIMIT:
            continue
        out[rel.as_posix()] = p.read_text(encoding="utf-8", errors="replace")
    return out


def _span(v) -> list[int] | None:
    """A [start, end] engine.log span, or None when the field is not one."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return [v[0], v[1]]
    return None


def _texts(v) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else ([] if v in (None, "") else [str(v)])


def _tail(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-limit, 2)
        return fh.read()


def _write_tar(out: Path, top: str, files: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    now = int(time.time())
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            dirs = sorted({str(Path(n).parent) for n in files if "/" in n})
            for d in [top] + [f"{top}/{d}" for d in dirs]:
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
                tar.addfile(info)
            for name in sorted(files):
                data = files[name]
                info = tarfile.TarInfo(f"{top}/{name}")
                info.mode, info.mtime = 0o644, now
                if isinstance(data, bytes):
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:  # a temporary file
                    data.seek(0, 2)
                    info.size = data.tell()
                    data.seek(0)
                    tar.addfile(info, data)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write bundle {out}: {exc}", hint="give a writable path with -o FILE") from None


def open_bundle(archive: str | Path, dest: str | Path) -> tuple[Path, dict]:
    """Safely extract a bundle into dest; returns (its run folder, bundle.json)."""
    from soak.outputs.safe_tar import safe_extract

    names = safe_extract(archive, dest)
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1:
        raise BadInput(f"{archive} is not a soak bundle (expected one top folder, found {len(tops)})",
                       hint="pass a .tar.gz written by `soak bundle`")
    run_dir = Path(dest) / tops.pop()
    meta_path = run_dir / "bundle.json"
    if not meta_path.is_file() or not (run_dir / run_folder.EVENTS).is_file():
        raise BadInput(f"{archive} is not a soak bundle (no bundle.json or {run_folder.EVENTS})",
                       hint="pass a .tar.gz written by `soak bundle`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{archive}: bundle.json is damaged ({exc})", hint="ask the sender for the original") from None
    return run_dir, meta

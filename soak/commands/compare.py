"""soak compare: the same seeded workload on several backends, side by side."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import secrets
import statistics
import sys
from pathlib import Path

from soak import errors

DESCRIPTION = """Run the same seeded workload on two or more backends, one after the other, and compare
prefill/decode tok/s (mean, stdev, n), load time, and output agreement with the first (reference) run:
the first diverging token of each iteration and the agreement rate. Random-weight models diverge
early, so agreement is reported, never gated. Writes <out>/<compare-id>/compare.json and one run
folder per backend next to it.

Examples:
  soak compare --backends cpu,opencl --engine mnn --mnn-build ~/MNN/build \\
               --model qwen-0.5b/config.json --thread-nums 4,68 --iterations 50
  soak compare --backends cpu,cpu --thread-nums 1,4 --engine mnn-pip \\
               --model soak/models/qwen2-tiny --iterations 40 --seed 1

A backend may repeat: --thread-nums / --precisions (comma lists, one item per backend, empty = the
run option) tell the runs apart. On OpenCL thread_num is a GPU-mode bit field (68 recommended), not a
thread count. pip MNN (--engine mnn-pip) is CPU only.

Agreement unit: the engine's token ids when the run recorded them (iteration events with
output_tokens), else Unicode characters of the output text (compare.json says which).
"""

NOTE = "random-weight models diverge early: agreement is reported, not gated"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from soak.commands import run as run_cmd

    c = p.add_argument_group("compare")
    c.add_argument("--backends", required=True, metavar="LIST",
                   help="comma list of backends, the first is the reference (e.g. cpu,opencl or cpu,cpu)")
    c.add_argument("--thread-nums", metavar="LIST",
                   help="thread_num per backend, e.g. 4,68 (CPU threads; OpenCL GPU-mode bits)")
    c.add_argument("--precisions", metavar="LIST", help="precision per backend, e.g. high,low")
    run_cmd.add_arguments(p)


def _split(text: str | None, n: int, name: str, convert=str) -> list:
    if not text:
        return [None] * n
    items = [s.strip() for s in text.split(",")]
    if len(items) != n:
        raise errors.BadInput(f"{name} has {len(items)} items but --backends has {n}",
                              f"give one {name} item per backend (empty for the run option)")
    try:
        return [convert(s) if s else None for s in items]
    except ValueError:
        raise errors.BadInput(f"bad {name} {text!r}", f"{name} is a comma list, e.g. 4,68") from None


def plan_variants(args: argparse.Namespace) -> list[dict]:
    from soak.loop.config import BACKENDS

    backends = [b.strip().lower() for b in (args.backends or "").split(",") if b.strip()]
    if len(backends) < 2:
        raise errors.BadInput(f"--backends needs at least two entries, got {args.backends!r}",
                              "e.g. --backends cpu,opencl, or --backends cpu,cpu --thread-nums 1,4")
    for b in backends:
        if b not in BACKENDS:
            raise errors.BadInput(f"unknown backend {b!r} in --backends", f"use {', '.join(BACKENDS)}")
    if args.backend:
        raise errors.BadInput("soak compare takes --backends LIST, not --backend",
                              "e.g. --backends cpu,opencl")
    threads = _split(args.thread_nums, len(backends), "--thread-nums", int)
    precisions = _split(args.precisions, len(backends), "--precisions")
    for prec in precisions:
        if prec not in (None, "low", "normal", "high"):
            raise errors.BadInput(f"bad precision {prec!r} in --precisions", "use low, normal or high")
    variants = []
    for k, (b, t, prec) in enumerate(zip(backends, threads, precisions)):
        label = b + (f"-t{t}" if t is not None else "") + (f"-{prec}" if prec else "")
        variants.append({"label": label, "backend": b, "thread_num": t, "precision": prec})
    labels = [v["label"] for v in variants]
    for k, v in enumerate(variants):
        if labels.count(v["label"]) > 1:
            v["label"] = f"{k}-{v['label']}"
    return variants


def _check_engine(engine: str, variants: list[dict]) -> None:
    """Fail before the first run, not after it."""
    if engine == "mnn-pip":
        for v in variants:
            if v["backend"] != "cpu":
                raise errors.BadInput(
                    f"pip MNN runs on the CPU only; --backends {v['backend']} needs a hand-built MNN",
                    errors.HAND_BUILT_MNN_HINT + "; or compare CPU settings: --backends cpu,cpu --thread-nums 1,4")


# -- statistics ---------------------------------------------------------------
def stats(values: list[float]) -> dict:
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"n": 0, "mean": None, "stdev": None, "min": None, "max": None}
    return {"n": len(values), "mean": round(statistics.fmean(values), 3),
            "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
            "min": round(min(values), 3), "max": round(max(values), 3)}


def units_of(event: dict) -> tuple[list, str]:
    tokens = event.get("output_tokens")
    if isinstance(tokens, list):
        return tokens, "tokens"
    return list(event.get("output") or ""), "chars"


def first_divergence(a: list, b: list) -> int | None:
    """Index of the first differing unit; None when equal."""
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


def agreement(ref: dict[int, dict], other: dict[int, dict]) -> dict:
    """Per-iteration output agreement of `other` with `ref` (iteration events by index)."""
    compared = identical = matched = total = prompt_mismatch = 0
    first: dict | None = None
    divergences = []
    units = set()
    for i in sorted(set(ref) & set(other)):
        a, b = ref[i], other[i]
        if a.get("prompt") != b.get("prompt") or a.get("max_new_tokens") != b.get("max_new_tokens"):
            prompt_mismatch += 1
            continue
        ua, unit_a = units_of(a)
        ub, unit_b = units_of(b)
        if unit_a != unit_b:
            ua, unit_a = list(a.get("output") or ""), "chars"
            ub = list(b.get("output") or "")
        units.add(unit_a)
        compared += 1
        k = first_divergence(ua, ub)
        longest = max(len(ua), len(ub))
        total += longest
        if k is None:
            identical += 1
            matched += longest
            continue
        matched += k
        divergences.append(k)
        if first is None:
            first = {"iteration": i, "index": k, "conversation": a.get("conversation"), "turn": a.get("turn")}
    return {
        "unit": units.pop() if len(units) == 1 else ("mixed" if units else None),
        "iterations_compared": compared,
        "identical_iterations": identical,
        "identical_rate": round(identical / compared, 4) if compared else None,
        "agreement_rate": round(matched / total, 4) if total else None,
        "first_divergence": first,
        "mean_first_divergence_index": round(statistics.fmean(divergences), 2) if divergences else None,
        "prompt_mismatches": prompt_mismatch,
    }


def summarize_run(run_dir: Path) -> tuple[dict, dict[int, dict]]:
    from soak.run_folder import read_events

    iterations: dict[int, dict] = {}
    loads, load_us = [], []
    faults = 0
    for ev in read_events(run_dir):
        kind = ev.get("event")
        if kind == "iteration":
            iterations[int(ev["i"])] = ev
        elif kind == "load" and ev.get("ok"):
            loads.append(ev.get("duration_s"))
            if ev.get("load_us") is not None:
                load_us.append(ev["load_us"] / 1e6)
        elif kind == "fault":
            faults += 1
    evs = list(iterations.values())
    summary = {}
    if (run_dir / "summary.json").exists():
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except ValueError:
            summary = {}
    row = {
        "iterations": len(evs),
        "faults": summary.get("faults", faults),
        "backend_actual": summary.get("backend_actual"),
        "engine_name": summary.get("engine_name"),
        "load_s": stats(loads),
        "first_load_s": loads[0] if loads else None,
        "engine_load_s": stats(load_us),
        "prefill_tps": stats([e.get("prefill_tps") for e in evs]),
        "decode_tps": stats([e.get("decode_tps") for e in evs]),
        "prompt_tokens": sum(e.get("prompt_tokens") or 0 for e in evs),
        "generated_tokens": sum(e.get("generated_tokens") or 0 for e in evs),
        "rss": summary.get("rss"),
    }
    return row, iterations


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def compare_runs(run_dirs: list[Path], variants: list[dict]) -> dict:
    rows, events = [], []
    for run_dir, v in zip(run_dirs, variants):
        row, iters = summarize_run(run_dir)
        rows.append({**v, "run_dir": str(run_dir), **row})
        events.append(iters)
    ref = rows[0]
    for row, iters in zip(rows, events):
        row["vs_reference"] = {
            "prefill_tps": _ratio(row["prefill_tps"]["mean"], ref["prefill_tps"]["mean"]),
            "decode_tps": _ratio(row["decode_tps"]["mean"], ref["decode_tps"]["mean"]),
            "load_s": _ratio(row["load_s"]["mean"], ref["load_s"]["mean"]),
        }
        row["agreement"] = agreement(events[0], iters)
    return {"schema": 1, "reference": ref["label"], "note": NOTE, "runs": rows}


def _fmt(s: dict, digits: int = 0) -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['stdev']:.{digits}f} (n={s['n']})"


def render(result: dict) -> str:
    head = ("run", "backend", "iters", "faults", "load s", "prefill tok/s", "decode tok/s",
            "decode vs ref", "identical", "agreement", "first diff")
    lines = []
    for r in result["runs"]:
        ag = r["agreement"]
        first = ag["first_divergence"]
        actual = r.get("backend_actual") or r["backend"]
        lines.append((
            r["label"], r["backend"] if actual == r["backend"] else f"{r['backend']}->{actual}",
            str(r["iterations"]), str(r["faults"]), _fmt(r["load_s"], 3), _fmt(r["prefill_tps"]),
            _fmt(r["decode_tps"]),
            f"{r['vs_reference']['decode_tps']:.2f}x" if r["vs_reference"]["decode_tps"] else "-",
            f"{ag['identical_iterations']}/{ag['iterations_compared']}",
            f"{ag['agreement_rate']:.1%}" if ag["agreement_rate"] is not None else "-",
            f"it {first['iteration']} @{first['index']} {ag['unit']}" if first else "none",
        ))
    widths = [max(len(h), *(len(row[k]) for row in lines)) for k, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
    out.append(f"reference: {result['reference']}; {result['note']}")
    return "\n".join(out)


def workload_script(cfg, iterations: int) -> list[dict]:
    """The run's turns, generated once and given to every run as a script: the workload's
    hypothesis draws can change with the modules imported in between (hypothesis mixes
    constants found in loaded modules into its draws), so two runs in one process could
    otherwise see different prompts for the same seed."""
    from soak.loop.workload import WorkloadSpec, conversation

    spec = WorkloadSpec(seed=cfg.seed, max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens,
                        context_tokens=cfg.context_tokens or 2048)
    script: list[dict] = []
    index = 0
    while len(script) < iterations:
        for t, turn in enumerate(conversation(spec, index).turns):
            if len(script) < iterations:
                script.append({"conversation": index, "turn": t, "prompt": turn.prompt,
                               "max_new_tokens": turn.max_new_tokens})
        index += 1
    return script


def run(args: argparse.Namespace) -> int:
    from soak.commands.run import config_from_args
    from soak.loop.runner import run_soak

    variants = plan_variants(args)
    base = config_from_args(args)
    _check_engine(base.engine, variants)
    if (args.target or ["local"]) != ["local"]:
        raise errors.BadInput("soak compare runs on the local host only", "drop --target, or run soak run per target")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    compare_id = args.run_id or f"{stamp}-compare-{'-'.join(v['backend'] for v in variants)}-{secrets.token_hex(2)}"
    folder = Path(args.out) / compare_id
    folder.mkdir(parents=True, exist_ok=True)
    if base.iterations is None:
        raise errors.BadInput("soak compare needs --iterations N (every run gets the same N turns)",
                              "e.g. --iterations 50; --duration then only caps each run")
    script = base.script or workload_script(base, base.iterations)
    (folder / "workload.json").write_text(json.dumps(script, indent=1, ensure_ascii=False) + "\n")
    run_dirs, codes = [], []
    for k, v in enumerate(variants, 1):
        cfg = config_from_args(args)
        cfg.backend = v["backend"]
        cfg.engine_options = dict(cfg.engine_options)
        if v["thread_num"] is not None:
            cfg.engine_options["thread_num"] = v["thread_num"]
        if v["precision"] is not None:
            cfg.engine_options["precision"] = v["precision"]
        cfg.out_dir, cfg.run_id, cfg.quiet, cfg.script = str(folder), v["label"], True, script
        if not args.quiet:
            print(f"[{k}/{len(variants)}] {v['label']}: {cfg.engine} on {v['backend']} "
                  f"({cfg.iterations if cfg.iterations is not None else cfg.duration_s} "
                  f"{'iterations' if cfg.iterations is not None else 's'}, seed {cfg.seed})", file=sys.stderr,
                  flush=True)
        result = run_soak(cfg)
        run_dirs.append(Path(result.run_dir))
        codes.append(result.exit_code)
        if result.summary.get("end_reason") == "interrupted":
            break
    variants = variants[:len(run_dirs)]
    if len(run_dirs) < 2:
        raise errors.SoakError("compare stopped before the second run", "run it again without Ctrl-C")
    result = compare_runs(run_dirs, variants)
    result.update({"compare_id": compare_id, "folder": str(folder), "argv": sys.argv[1:],
                   "seed": base.seed, "engine": base.engine,
                   "exit_codes": dict(zip([v["label"] for v in variants], codes))})
    (folder / "compare.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if not args.quiet:  # people text on stderr: stdout is for --json
        print(render(result), file=sys.stderr)
        print(f"wrote {folder / 'compare.json'}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return max(codes, default=0)

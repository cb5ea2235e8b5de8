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
from soak.end_reasons import INTERRUPTED, TERMINATED

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

Tuning sweep (OpenCL): --gpu-modes LIST runs one OpenCL variant per MNN GPU mode, each item a
'+' list of names from thread_num's bit field: tuning none/heavy/wide/normal/fast (exactly one),
buffer/image, record (record op), record-batch; e.g. --gpu-modes none,fast,normal,wide,normal+image.
--gpu-precisions / --gpu-memories cross every mode with these precision/memory settings. Each
OpenCL variant of a sweep gets its own fresh kernel cache folder (--tmp-path DIR/<label>, default
under the compare folder), so its first load is cold (MNN compiles and tunes); --warm-load adds a
1-iteration run per variant on that cache to time a warm load. --backends is optional then (give
e.g. --backends cpu for a CPU reference first). The table: tok/s with stdev, load time cold and
warm, errors (faults + failed CL calls) per setting.

  soak compare --engine mnn --mnn-build ~/MNN/build --model m/config.json --iterations 20 --seed 1 \
               --backends cpu --gpu-modes none,fast,normal,wide,normal+image --warm-load

Agreement unit: the engine's token ids when the run recorded them (iteration events with
output_tokens), else Unicode characters of the output text (compare.json says which).
"""

NOTE = "random-weight models diverge early: agreement is reported, not gated"
STOPPED = (INTERRUPTED, TERMINATED)  # a run ended by Ctrl-C or SIGTERM ends the sweep too


def add_arguments(p: argparse.ArgumentParser) -> None:
    from soak.commands import run as run_cmd

    c = p.add_argument_group("compare")
    c.add_argument("--backends", metavar="LIST",
                   help="comma list of backends, the first is the reference (e.g. cpu,opencl or cpu,cpu); "
                        "optional with --gpu-modes")
    c.add_argument("--thread-nums", metavar="LIST",
                   help="thread_num per backend, e.g. 4,68 (CPU threads; OpenCL GPU-mode bits)")
    c.add_argument("--precisions", metavar="LIST", help="precision per backend, e.g. high,low")
    c.add_argument("--memories", metavar="LIST", help="memory per backend, e.g. low,high")
    c.add_argument("--gpu-modes", metavar="LIST",
                   help="OpenCL sweep: one variant per GPU mode, e.g. none,fast,normal,wide,normal+image,fast+record")
    c.add_argument("--gpu-precisions", metavar="LIST", help="OpenCL sweep: cross the modes with these precisions")
    c.add_argument("--gpu-memories", metavar="LIST", help="OpenCL sweep: cross the modes with these memory settings")
    c.add_argument("--warm-load", action="store_true",
                   help="OpenCL sweep: one more 1-iteration run per variant on its cache, to time a warm load")
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


# MNN's OpenCL thread_num bit field (soak run --help)
GPU_MODE_BITS = {"none": 1, "heavy": 2, "wide": 4, "normal": 8, "fast": 16, "buffer": 64, "image": 128,
                 "record": 256, "record-batch": 512}
TUNING = ("none", "heavy", "wide", "normal", "fast")


def gpu_mode_bits(mode: str) -> int:
    """'normal+image' -> 136.  Exactly one tuning name; buffer (64) when neither buffer nor image."""
    names = [n.strip().lower() for n in mode.split("+") if n.strip()]
    bad = [n for n in names if n not in GPU_MODE_BITS]
    if bad or not names:
        raise errors.BadInput(f"unknown GPU mode {mode!r} in --gpu-modes",
                              f"use '+' lists of {', '.join(GPU_MODE_BITS)}, e.g. fast or normal+image")
    tuning = [n for n in names if n in TUNING]
    if len(tuning) != 1:
        raise errors.BadInput(f"GPU mode {mode!r} needs exactly one tuning name",
                              f"one of {', '.join(TUNING)}, e.g. {mode}+fast" if not tuning else "e.g. fast+image")
    if "buffer" in names and "image" in names:
        raise errors.BadInput(f"GPU mode {mode!r} has both buffer and image", "pick one, e.g. normal+image")
    if "buffer" not in names and "image" not in names:
        names.append("buffer")
    return sum(GPU_MODE_BITS[n] for n in set(names))


def _list(text: str | None, name: str, allowed: tuple) -> list:
    if not text:
        return [None]
    items = [s.strip().lower() for s in text.split(",") if s.strip()]
    for item in items:
        if item not in allowed:
            raise errors.BadInput(f"bad {name} item {item!r}", f"use {', '.join(allowed)}")
    return items


def sweep_variants(args: argparse.Namespace) -> list[dict]:
    modes = [m.strip() for m in (args.gpu_modes or "").split(",") if m.strip()]
    precisions = _list(args.gpu_precisions, "--gpu-precisions", ("low", "normal", "high"))
    memories = _list(args.gpu_memories, "--gpu-memories", ("low", "normal", "high"))
    out = []
    for mode in modes:
        bits = gpu_mode_bits(mode)
        for prec in precisions:
            for mem in memories:
                label = "cl-" + mode.replace("+", "-") + (f"-p{prec}" if prec else "") + (f"-m{mem}" if mem else "")
                out.append({"label": label, "backend": "opencl", "thread_num": bits, "precision": prec,
                            "memory": mem, "gpu_mode": mode, "sweep": True})
    return out


def plan_variants(args: argparse.Namespace) -> list[dict]:
    from soak.loop.config import BACKENDS

    backends = [b.strip().lower() for b in (args.backends or "").split(",") if b.strip()]
    sweep = sweep_variants(args) if args.gpu_modes else []
    if not sweep and (args.gpu_precisions or args.gpu_memories or args.warm_load):
        raise errors.BadInput("--gpu-precisions, --gpu-memories and --warm-load go with --gpu-modes",
                              "e.g. --gpu-modes none,fast,normal,wide --warm-load")
    if len(backends) + len(sweep) < 2:
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
    memories = _split(args.memories, len(backends), "--memories")
    for mem in memories:
        if mem not in (None, "low", "normal", "high"):
            raise errors.BadInput(f"bad memory {mem!r} in --memories", "use low, normal or high")
    for prec in precisions:
        if prec not in (None, "low", "normal", "high"):
            raise errors.BadInput(f"bad precision {prec!r} in --precisions", "use low, normal or high")
    variants = []
    for k, (b, t, prec, mem) in enumerate(zip(backends, threads, precisions, memories)):
        label = b + (f"-t{t}" if t is not None else "") + (f"-{prec}" if prec else "") + (f"-m{mem}" if mem else "")
        variants.append({"label": label, "backend": b, "thread_num": t, "precision": prec, "memory": mem})
    variants += sweep
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
    from soak import run_folder

    run_dir = run_folder.require(run_dir)  # a manifest of a newer major schema: BadInput (exit 3)
    iterations: dict[int, dict] = {}
    loads, load_us, caches = [], [], []
    faults = cl_errors = 0
    for ev in run_folder.read_events(run_dir):
        kind = ev.get("event")
        if kind == "iteration":
            iterations[int(ev["i"])] = ev
            cl_errors += int(ev.get("cl_call_errors") or 0)
        elif kind == "load" and ev.get("ok"):
            loads.append(ev.get("duration_s"))
            caches.append(ev.get("cache"))
            if ev.get("load_us") is not None:
                load_us.append(ev["load_us"] / 1e6)
        elif kind == "fault":
            faults += 1
    evs = list(iterations.values())
    try:
        summary = run_folder.read_json(run_dir / run_folder.SUMMARY) or {}
    except run_folder.DamagedFile:
        summary = {}
    row = {
        "iterations": len(evs),
        "faults": summary.get("faults", faults),
        "backend_actual": summary.get("backend_actual"),
        "engine_name": summary.get("engine_name"),
        "load_s": stats(loads),
        "first_load_s": loads[0] if loads else None,
        "first_load_cache": caches[0] if caches else None,
        # MNN compiles (and tunes) kernels on first use too: the first iteration carries that cost
        "first_iteration_s": iterations[min(iterations)].get("wall_s") if iterations else None,
        "cl_call_errors": cl_errors,
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


def render_sweep(result: dict) -> str:
    """The tuning table: tok/s with stdev, load time cold/warm (tuning cost), errors per setting."""
    head = ("setting", "thread_num", "prec", "mem", "iters", "errors", "load cold s", "load warm s",
            "1st iter cold/warm s", "prefill tok/s", "decode tok/s", "decode vs ref")
    lines = []
    for r in result["runs"]:
        warm = r.get("warm_load_s")
        lines.append((
            r["label"], str(r.get("thread_num") if r.get("thread_num") is not None else "-"),
            r.get("precision") or "-", r.get("memory") or "-", str(r["iterations"]),
            f"{r['faults']}+{r.get('cl_call_errors', 0)}cl",
            f"{r['first_load_s']:.3f} ({r.get('first_load_cache') or '?'})" if r.get("first_load_s") else "-",
            f"{warm:.3f} ({r.get('warm_load_cache') or '?'})" if warm else "-",
            f"{_num(r.get('first_iteration_s'))} / {_num(r.get('warm_first_iteration_s'))}",
            _fmt(r["prefill_tps"]), _fmt(r["decode_tps"], 1),
            f"{r['vs_reference']['decode_tps']:.2f}x" if r["vs_reference"]["decode_tps"] else "-"))
    widths = [max(len(h), *(len(row[k]) for row in lines)) for k, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
    out.append(f"reference: {result['reference']}; errors = faults + failed CL calls; "
               "load cold = first load on a fresh kernel cache, warm = again on that cache; "
               "1st iter: the first iteration's wall time, where kernels compiled and tuned on first use land")
    return "\n".join(out)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


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
    from soak.judges import run_judged

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
        if v.get("memory") is not None:
            cfg.engine_options["memory"] = v["memory"]
        cache = None
        if v.get("sweep"):  # its own fresh kernel cache: the first load is cold
            cache = Path(args.tmp_path or folder / "cache") / v["label"]
            if cache.exists() and any(cache.iterdir()):
                raise errors.BadInput(f"kernel cache {cache} is not empty, so the cold load would be warm",
                                      "give a fresh --tmp-path (or --run-id) for the sweep")
            cache.mkdir(parents=True, exist_ok=True)
            cfg.engine_options["tmp_path"] = str(cache)
        cfg.out_dir, cfg.run_id, cfg.quiet, cfg.script = str(folder), v["label"], True, script
        if not args.quiet:
            print(f"[{k}/{len(variants)}] {v['label']}: {cfg.engine} on {v['backend']} "
                  f"({cfg.iterations if cfg.iterations is not None else cfg.duration_s} "
                  f"{'iterations' if cfg.iterations is not None else 's'}, seed {cfg.seed})", file=sys.stderr,
                  flush=True)
        result = run_judged(cfg)
        run_dirs.append(Path(result.run_dir))
        codes.append(result.exit_code)
        if result.summary.get("end_reason") in STOPPED:
            break
        if cache is not None and args.warm_load:
            warm = config_from_args(args)
            warm.backend, warm.engine_options = cfg.backend, dict(cfg.engine_options)
            warm.iterations, warm.duration_s = 1, None
            warm.out_dir, warm.run_id, warm.quiet, warm.script = str(folder), v["label"] + "-warm", True, script[:1]
            wres = run_judged(warm)
            v["warm_run_dir"] = str(wres.run_dir)
            if wres.summary.get("end_reason") in STOPPED:
                break
    variants = variants[:len(run_dirs)]
    if len(run_dirs) < 2:
        raise errors.SoakError("compare stopped before the second run", "run it again without Ctrl-C")
    result = compare_runs(run_dirs, variants)
    for row in result["runs"]:
        if row.get("warm_run_dir"):
            warm_row, _ = summarize_run(Path(row["warm_run_dir"]))
            row["warm_load_s"] = warm_row["first_load_s"]
            row["warm_load_cache"] = warm_row["first_load_cache"]
            row["warm_first_iteration_s"] = warm_row["first_iteration_s"]
    result.update({"compare_id": compare_id, "folder": str(folder), "argv": sys.argv[1:],
                   "seed": base.seed, "engine": base.engine,
                   "exit_codes": dict(zip([v["label"] for v in variants], codes))})
    (folder / "compare.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if not args.quiet:  # people text on stderr: stdout is for --json
        print(render(result), file=sys.stderr)
        if any(v.get("sweep") for v in variants):
            print(file=sys.stderr)
            print(render_sweep(result), file=sys.stderr)
        print(f"wrote {folder / 'compare.json'}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return max(codes, default=0)

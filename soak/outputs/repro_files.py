"""What `soak repro` writes: RUN/repro/ (or BUNDLE-repro/ beside a bundle).

    repro/repro.json                   the causes reproduced (soak.history.read_repro's format)
    repro/<cause>/script.json          the minimal workload, turns by conversation (`soak replay repro/<cause>`)
    repro/<cause>/run_config.json      its configuration (a manifest's `config`)
    repro/<cause>/result.json          reliability, steps taken, time spent, the fault rule, what was learnt
    repro/<cause>/repro.md             for a human
    repro/<cause>/mnn-reproducer/      standalone: config.json, prompt files, the llm_demo command line
                                       (run.sh) and, where one llm_demo run cannot express the workload,
                                       repro.cpp against MNN's Llm API with its build line; the
                                       interposer environment for injected OpenCL faults
    repro/<cause>/reliability-runs/    the reliability runs (run folders)
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from soak import run_folder
from soak.loop.config import config_dict

MNN_ENGINES = ("mnn", "mnn-pip", "lib")
DRIVER_ENV_PREFIXES = ("POCL_", "OCL_ICD_")


def cause_dir_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)[:100] or "cause"


def write_repro(repro_dir: Path, result, cfg, source: str, command: str) -> Path:
    """Write one cause's reproducer (result: soak.repro.ReproResult; cfg: its RunConfig with the
    minimal script) under repro_dir; update repro.json.  Returns the cause's folder."""
    folder = repro_dir / cause_dir_name(result.key)
    folder.mkdir(parents=True, exist_ok=True)
    turns = cfg.script
    run_folder.write_json(folder / run_folder.REPRO_SCRIPT, {
        "schema": 1, "cause": result.key, "signature": result.cause.get("signature"),
        "conversations": result.best.size()["conversations"], "turns": turns})
    saved = config_dict(cfg)
    saved.update({"iterations": None, "duration_s": None, "run_id": None, "quiet": False, "argv": []})
    run_folder.write_json(folder / run_folder.REPRO_CONFIG, saved)
    rel = result.final.recurred if result.final else None
    runs = result.final.attempts if result.final else None
    window_rel = ([result.window_test.recurred, result.window_test.attempts] if result.window_test else None)
    fault_rule = fault_rule_of(cfg)
    summary = {
        "schema": 1, "cause": result.key, "signature": result.cause.get("signature"),
        "title": result.cause.get("title") or result.cause.get("signature_text"),
        "source": source, "stopped": result.stopped,
        "reliability": {"recurred": rel, "runs": runs, "value": result.reliability},
        "window": {"size": result.window.size(), "reliability": window_rel, "target_iteration": result.target},
        "minimal": {"size": result.best.size(), "engine_options": result.best.engine_options},
        "fault_rule": fault_rule, "learnt": result.facts, "steps": result.steps,
        "elapsed_s": round(result.elapsed_s, 3), "runs": result.runs, "memory": result.memory,
        "reliability_runs": [os.path.relpath(d, folder) for d in (result.final.run_dirs if result.final else [])],
    }
    mnn = None
    if cfg.engine in MNN_ENGINES:
        mnn = write_mnn_reproducer(folder / run_folder.REPRO_MNN, cfg)
        summary["mnn_reproducer"] = mnn
    run_folder.write_json(folder / run_folder.REPRO_RESULT, summary)
    (folder / run_folder.REPRO_README).write_text(render_md(result, summary, mnn, cfg, command, folder),
                                                  encoding="utf-8")
    _update_meta(repro_dir, result, folder, command, rel, runs)
    return folder


def _update_meta(repro_dir: Path, result, folder: Path, command: str, rel, runs) -> None:
    path = repro_dir / run_folder.REPRO_META
    meta = run_folder.read_json(path) if path.is_file() else None
    causes = [c for c in (meta or {}).get("causes") or [] if isinstance(c, dict) and c.get("key") != result.key]
    rel_path = f"{run_folder.REPRO}/{folder.name}"
    causes.append({"key": result.key, "attempts": runs or 0, "reproduced": rel or 0, "path": rel_path,
                   "command": command, "dir": folder.name, "reliability": result.reliability,
                   "stopped": result.stopped, "memory": result.memory})
    run_folder.write_json(path, {"schema": 1, "causes": causes})


def fault_rule_of(cfg) -> dict | None:
    """The injected fault the reproducer needs: test-engine plan, OpenCL rules (and their environment)."""
    out = {}
    if cfg.engine == "test" and cfg.fault_plan:
        out["test_engine_plan"] = cfg.fault_plan
    if cfg.intercept is not None and cfg.intercept.get("faults"):
        out["cl_faults"] = cfg.intercept["faults"]
        out["env"] = {"SOAK_CL_FAULTS": cfg.intercept["faults"],
                      "SOAK_CL_GPU_OVERRIDE": "1" if cfg.intercept.get("gpu_override") else "0"}
    return out or None


# -- the standalone MNN reproducer -------------------------------------------------------------
def write_mnn_reproducer(folder: Path, cfg) -> dict:
    """config.json (the model's, with the run's runtime keys and base_dir), a prompt file per turn,
    run.sh (the llm_demo command line, or the C++ program's build and run lines) and, for injected
    OpenCL faults, the interposer environment."""
    folder.mkdir(parents=True, exist_ok=True)
    from soak.loop.config import model_path

    model = model_path(cfg)
    model_cfg = json.loads(model.read_text(encoding="utf-8"))
    runtime = {"backend_type": cfg.backend, "reuse_kv": True}
    runtime.update({k: v for k, v in cfg.engine_options.items() if v is not None})
    model_cfg.update(runtime)
    model_cfg["base_dir"] = str(model.parent) + "/"
    (folder / "config.json").write_text(json.dumps(model_cfg, indent=2) + "\n", encoding="utf-8")
    turns = cfg.script or []
    convs: dict[int, list[dict]] = {}
    for t in turns:
        convs.setdefault(t["conversation"], []).append(t)
    plan_lines = []
    for n, t in enumerate(turns):
        name = f"prompt-{n + 1}.txt"
        (folder / name).write_text(t["prompt"], encoding="utf-8")
        plan_lines.append(f"{t['conversation']}\t{t['max_new_tokens']}\t{name}")
    build = _mnn_build_dir(cfg)
    source = os.environ.get("SOAK_MNN_SOURCE") or ""
    env = _interposer_env(cfg, folder)
    if build and cfg.engine != "mnn":  # MNN's libraries beside the plugin (--engine lib): llm_demo needs them
        paths = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(paths + ([build] if build not in paths else []))
    # the OpenCL driver's own settings soak ran under (PoCL's work-group method, its cache)
    if cfg.backend == "opencl":
        env.update({k: v for k, v in sorted(os.environ.items()) if k.startswith(DRIVER_ENV_PREFIXES)})
    preload = _plugins(cfg, build) if cfg.backend == "opencl" else []
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    env_text = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    one_run = (len(convs) == 1 and len(turns) == 1 and "\n" not in turns[0]["prompt"]
               and "\r" not in turns[0]["prompt"] and not turns[0]["prompt"].startswith("#"))
    demo = str(Path(build) / "llm_demo") if build and (Path(build) / "llm_demo").is_file() else "llm_demo"
    lines = ["#!/bin/sh", "# soak repro: the standalone MNN reproducer (no soak needed)", 'cd "$(dirname "$0")"']
    out = {"config": "config.json", "prompts": [f"prompt-{n + 1}.txt" for n in range(len(turns))], "env": env}
    if one_run:
        cmd = (f"{env_text + ' ' if env_text else ''}{shlex.quote(demo)} config.json prompt-1.txt "
               f"{turns[0]['max_new_tokens']}")
        lines.append(cmd)
        out["llm_demo"] = cmd
    else:
        (folder / "turns.tsv").write_text("\n".join(plan_lines) + "\n", encoding="utf-8")
        (folder / "repro.cpp").write_text(CPP_PROGRAM, encoding="utf-8")
        inc = f"{source}/include" if source else "$MNN_SOURCE/include"
        lib = build or "$MNN_BUILD"
        link = [f"-L{lib}", "-lllm", "-lMNN"]
        rpath = [lib]
        for p in preload:
            link.append(f"-L{Path(p).parent}")
            link.append("-l" + Path(p).name[3:-3])
            rpath.append(str(Path(p).parent))
        build_line = (f"g++ -std=c++17 -O1 repro.cpp {_arg('-I' + inc)} -Wl,--no-as-needed "
                      + " ".join(_arg(x) for x in link)
                      + " " + " ".join(_arg(f"-Wl,-rpath,{r}") for r in rpath) + " -o repro")
        run_line = f"{env_text + ' ' if env_text else ''}./repro config.json turns.tsv"
        lines += [build_line, run_line]
        out["build"] = build_line
        out["run"] = run_line
        out["program"] = "repro.cpp"
    (folder / "run.sh").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "run.sh").chmod(0o755)
    return out


def _arg(x: str) -> str:
    """A shell word: quoted, except that $MNN_BUILD / $MNN_SOURCE (where soak did not know the
    folders) stay for the shell to expand."""
    return f'"{x}"' if "$MNN_" in x and '"' not in x and "`" not in x else shlex.quote(x)


def _mnn_build_dir(cfg) -> str | None:
    if cfg.engine != "mnn":  # --engine lib: the folder of a plugin that holds MNN's libllm.so
        for p in getattr(cfg, "plugins", None) or []:
            if (Path(p).parent / "libllm.so").is_file():
                return str(Path(p).parent)
        return None
    try:
        from soak.engine.mnn_native import locate

        return str(locate(cfg.mnn_build).build_dir)
    except Exception:
        return cfg.mnn_build or os.environ.get("SOAK_MNN_BUILD")


def _plugins(cfg, build: str | None) -> list[str]:
    if cfg.engine != "mnn":
        return [str(p) for p in cfg.plugins]
    try:
        from soak.engine.mnn_native import locate

        mnn = locate(cfg.mnn_build)
        return [str(p) for p in mnn.plugins]
    except Exception:
        return []


def _interposer_env(cfg, folder: Path) -> dict:
    """The environment that puts soak's interposer (and the reproducer's OpenCL faults) under MNN."""
    if cfg.intercept is None:
        return {}
    from soak.cl import interposer

    env = interposer.prepare(cfg.intercept, folder, base_env={})
    keep = ("LD_LIBRARY_PATH", "SOAK_CL_REAL_LIB", "SOAK_CL_FAULTS", "SOAK_CL_GPU_OVERRIDE", "SOAK_CL_TRACE",
            "SOAK_CL_MEM_LIMIT")
    env = {k: v for k, v in env.items() if k in keep and v}
    if "SOAK_CL_TRACE" in env:
        env["SOAK_CL_TRACE"] = run_folder.CL_TRACE   # beside run.sh, when it runs
    return env


CPP_PROGRAM = r"""// soak repro: the workload as MNN's Llm API runs it, without soak.
// turns.tsv: one line per turn, "conversation<TAB>max_new_tokens<TAB>prompt file", in order;
// reset() between conversations, as soak does.  Build and run lines: run.sh.
#include <llm/llm.hpp>

#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

using MNN::Transformer::Llm;

static std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

int main(int argc, char** argv) {
    if (argc < 3) {
        std::cerr << "usage: " << argv[0] << " config.json turns.tsv\n";
        return 2;
    }
    std::unique_ptr<Llm> llm(Llm::createLLM(argv[1]));
    if (!llm || !llm->load()) {
        std::cerr << "repro: load failed\n";
        return 3;
    }
    std::ifstream plan(argv[2]);
    std::string line;
    long current = -1;
    int n = 0;
    while (std::getline(plan, line)) {
        std::istringstream fields(line);
        long conversation = 0;
        int max_new = -1;
        std::string file;
        if (!(fields >> conversation >> max_new >> file)) continue;
        if (current >= 0 && conversation != current) {
            std::cout << "\n[repro] reset (conversation " << conversation << ")" << std::endl;
            llm->reset();
        }
        current = conversation;
        std::cout << "\n[repro] turn " << ++n << " (conversation " << conversation << ", " << file << ")"
                  << std::endl;
        llm->response(slurp(file), &std::cout, nullptr, max_new);
        std::cout << std::endl;
    }
    std::cout << "[repro] done: " << n << " turns" << std::endl;
    return 0;
}
"""


# -- repro.md ------------------------------------------------------------------------------------
def render_md(result, summary: dict, mnn: dict | None, cfg, command: str, folder: Path) -> str:
    rel = summary["reliability"]
    w = summary["window"]["size"]
    m = summary["minimal"]["size"]
    lines = [f"# Reproducer: {result.key}", "",
             f"{summary.get('title') or ''}  (signature `{result.cause.get('signature')}`)", "",
             f"- source: `{summary['source']}`",
             f"- outcome: **{result.stopped}**"
             + (f"; reliability **{rel['recurred']} of {rel['runs']}**" if rel["runs"] else ""),
             f"- window (first occurrence, iteration {w and summary['window']['target_iteration']}): "
             f"{w['conversations']} conversations, {w['turns']} turns, {w['prompt_chars']} prompt chars",
             f"- minimal: {m['conversations']} conversations, {m['turns']} turns, {m['prompt_chars']} prompt chars, "
             f"{m['new_tokens']} new tokens",
             f"- engine `{cfg.engine}`, backend `{cfg.backend}`, options `{json.dumps(cfg.engine_options)}`",
             f"- {result.runs} runs, {summary['elapsed_s']:.1f} s", ""]
    if result.memory:
        mem = result.memory
        lines += [f"Memory cause: kept when a candidate grows `{mem['series']}` by at least "
                  f"{mem['target_bytes']} bytes ({mem['share']:.0%} of the window's {mem['window_bytes']}).", ""]
    lines += ["## Replay with soak", "", "```", f"soak replay {folder}", "```", "",
              "## The minimal workload", ""]
    for t in cfg.script or []:
        prompt = t["prompt"] if len(t["prompt"]) <= 200 else t["prompt"][:200] + f"... ({len(t['prompt'])} chars)"
        lines.append(f"- conversation {t['conversation'] + 1}, turn {t['turn'] + 1} (iteration {t.get('i')}, "
                     f"max_new_tokens {t['max_new_tokens']}): `{prompt!r}`")
    if summary.get("fault_rule"):
        lines += ["", "## Injected fault", "", "```json", json.dumps(summary["fault_rule"], indent=2), "```"]
    if result.facts:
        lines += ["", "## What the configuration steps learnt", ""] + [f"- {f}" for f in result.facts]
    if mnn:
        lines += ["", "## Standalone MNN reproducer", "", f"In `{run_folder.REPRO_MNN}/` (run.sh):", "", "```"]
        lines += [mnn["llm_demo"]] if "llm_demo" in mnn else [mnn["build"], mnn["run"]]
        lines += ["```"]
    lines += ["", "## Steps", "", "| step | candidate | size | recurred | kept |", "|---|---|---|---|---|"]
    for s in result.steps:
        size = s["size"]
        lines.append(f"| {s['step']} | {s['what']} | {size['conversations']}c/{size['turns']}t/"
                     f"{size['prompt_chars']}ch/{size['new_tokens']}tok | {s['recurred']}/{s['attempts']} | "
                     f"{'yes' if s['accepted'] else 'no'} |")
    lines += ["", f"Made by `{command}`."]
    return "\n".join(lines) + "\n"

"""Silent faults of the interposer on a hand-built MNN, OpenCL on PoCL: MNN's own teacher-forced
logits comparison (llm_logits_diff: A = CPU fp32 drives, B = OpenCL through the interposer) shows
that a skipped kernel family or a corrupted write is a wrong answer with no CL error, and the
interposer's records name the rule.

Needs SOAK_MNN_BUILD (its llm_logits_diff, libMNN_CL.so) and PoCL; kernel caches as in
test_mnn_soak_run.py (the first run builds MNN's kernels: minutes)."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from soak.cl import interposer
from soak.cl.trace import TraceReader

pytestmark = [
    pytest.mark.mnn_native,
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("SOAK_MNN_BUILD"),
                       reason="needs a hand-built MNN: set SOAK_MNN_BUILD (and SOAK_MNN_SOURCE)"),
]

PROMPT = "Write a short story about a robot who learns to paint, in the style of a fairy tale with a happy ending."
TOKENS = 16
FAMILY = "layernorm*"  # MNN 3.6.1's buffer-mode RMSNorm kernel (layernorm_buf): every layer, every step


@dataclass
class Diff:
    rc: int
    log: str
    worst: float  # worst max|logit A - logit B| over the steps (NaN steps do not count: see nan)
    kl: float     # mean KL(A||B)
    nll_b: float
    steps: list[float] = field(default_factory=list)  # max|diff| per step
    records: list[dict] = field(default_factory=list)  # the interposer's, folded per kind
    raw: list[dict] = field(default_factory=list)
    stats: dict | None = None


def _float(text: str) -> float:
    return float("nan") if "nan" in text else float(text)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model, mnn_build):
    from soak.native_build import cache_root

    tool = mnn_build.build_dir / "llm_logits_diff"
    assert tool.exists(), f"{tool}: this MNN build has no llm_logits_diff (MNN_BUILD_LLM=ON builds it)"
    plugin = mnn_build.opencl_plugin()
    assert plugin is not None, "this MNN build has no libMNN_CL.so (MNN_OPENCL=ON)"
    model = tmp_path_factory.mktemp("model")
    for f in tiny_model.parent.iterdir():
        if f.is_file():
            shutil.copy(f, model / f.name)
    base = json.loads((model / "config.json").read_text())
    json.dump(dict(base, backend_type="cpu", precision="high", thread_num=1), (model / "a.json").open("w"))
    json.dump(dict(base, backend_type="opencl", precision="normal", thread_num=68), (model / "b.json").open("w"))
    (model / "prompt.txt").write_text(PROMPT + "\n")
    caches = cache_root() / "mnn-test-kernels"
    cwd = caches / "logits_diff"  # llm_logits_diff keeps B's MNN kernel cache in ./tmp_diff_b
    (cwd / "tmp_diff_b").mkdir(parents=True, exist_ok=True)
    (caches / "pocl").mkdir(parents=True, exist_ok=True)
    return {"tool": tool, "plugin": plugin, "model": model, "cwd": cwd, "pocl": caches / "pocl",
            "lib_dir": interposer.interposer_library().parent, "runs": tmp_path_factory.mktemp("runs")}


def logits_diff(setup, tag: str, faults: str = "", profile: bool = False) -> Diff:
    run_dir = setup["runs"] / tag
    env = dict(os.environ)
    env.update(interposer.prepare({"faults": faults, "gpu_override": True, "profile": profile,
                                   "profile_sample": 1}, run_dir, interposer_dir=setup["lib_dir"], mnn_paths=()))
    env.update({"LD_PRELOAD": str(setup["plugin"]), "POCL_CACHE_DIR": str(setup["pocl"]),
                "POCL_WORK_GROUP_METHOD": "cbs"})
    m = setup["model"]
    proc = subprocess.run([str(setup["tool"]), str(m / "a.json"), str(m / "b.json"), str(m / "prompt.txt"),
                           str(TOKENS)], cwd=setup["cwd"], env=env, capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    s = re.search(r"worst maxAbsDiff=(\S+)", out)
    d = re.search(r"mean KL\(A\|\|B\)=(\S+), teacher-forced mean NLL A=\S+ B=(\S+)", out)
    assert s and d, f"llm_logits_diff said:\n{out[-3000:]}"
    steps = [_float(ln.split("|")[3].split()[0]) for ln in out.splitlines() if re.match(r"\s*\d+ \|", ln)]
    raw = TraceReader(run_dir).poll_raw()
    reader = TraceReader(run_dir)
    return Diff(proc.returncode, out, _float(s.group(1)), _float(d.group(1)), _float(d.group(2)), steps,
                reader.poll(), raw, reader.stats())


@pytest.fixture(scope="module")
def clean(setup) -> Diff:
    # a first run tunes and builds MNN's kernels (MNN keeps them in ./tmp_diff_b at exit): the launches
    # of the runs after it are the model's alone, and they count the same in every one of them
    warm = logits_diff(setup, "warm-up")
    assert warm.rc == 0, warm.log[-3000:]
    d = logits_diff(setup, "clean", profile=True)
    assert d.rc == 0, d.log[-3000:]
    assert d.stats["api"]["clEnqueueNDRangeKernel"]["calls"] > 100, "MNN did not run on OpenCL"
    return d


def launches(d: Diff) -> dict[str, int]:
    """Kernel launches per kernel name (profile records, every launch timed)."""
    out: dict[str, int] = {}
    for r in d.raw:
        if r.get("type") == "profile":
            for c in r.get("commands", []) + [r.get("other") or {}]:
                if c.get("kernel"):
                    out[c["kernel"]] = out.get(c["kernel"], 0) + c["count"]
    return out


def test_clean_opencl_run_agrees_with_the_cpu(clean):
    assert clean.kl < 0.01 and clean.worst < 1.0, clean.log[-2000:]
    assert not [r for r in clean.records if r.get("type") == "error"]
    assert "CL ERROR" not in clean.log


def test_skipped_kernel_family_is_a_wrong_answer_without_a_cl_error(setup, clean):
    names = launches(clean)
    family = {k: n for k, n in names.items() if fnmatch.fnmatch(k, FAMILY)}
    assert family, f"no {FAMILY} kernel among MNN's launches: {sorted(names)}"
    total = sum(family.values())
    start = total * 2 // 3  # from two thirds of the way through the decode
    d = logits_diff(setup, "skip", f"clEnqueueNDRangeKernel=skip@kernel:{FAMILY},from:{start}")
    assert d.rc == 0 and "CL ERROR" not in d.log  # MNN saw nothing wrong
    # teacher-forced logits: far outside what the healthy run shows
    assert d.kl > 50 * max(clean.kl, 1e-6) and d.worst > 5 * clean.worst, (d.kl, d.worst, clean.kl, clean.worst)
    first = next(i for i, x in enumerate(d.steps) if not x <= 3 * clean.worst)
    assert first > 0 and d.steps[0] == clean.steps[0]  # the first steps ran before the skips began
    # exactly the launches from `start` on were skipped, each recorded as the injected rule
    api = d.stats["api"]["clEnqueueNDRangeKernel"]
    assert api["injected"] == total - start + 1 and api["errors"] == 0
    (rec,) = [r for r in d.records if r.get("type") == "error"]
    assert rec["action"] == "skip" and rec["code"] == 0 and rec["injected"] is True
    assert rec["why"] == f"clEnqueueNDRangeKernel=skip@kernel:{FAMILY},from:{start}"
    assert fnmatch.fnmatch(rec["kernel"], FAMILY) and rec["count"] == total - start + 1


def test_corrupted_input_write_reaches_the_logits(setup, clean):
    d = logits_diff(setup, "corrupt", "clEnqueueWriteBuffer=corrupt:nan:all@nth:1")
    assert d.rc == 0 and "CL ERROR" not in d.log
    assert math.isnan(d.kl) or math.isnan(d.nll_b) or d.kl > 50 * max(clean.kl, 1e-6), d.log[-2000:]
    (rec,) = [r for r in d.records if r.get("type") == "error"]
    assert (rec["api"], rec["action"], rec["mode"], rec["index"]) == ("clEnqueueWriteBuffer", "corrupt", "nan", 1)
    assert rec["changed"] == rec["bytes"] // 4 > 0

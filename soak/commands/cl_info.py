"""soak cl-info: the OpenCL platforms and devices a worker would see."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from soak.errors import ExitCode, OpenCLSetupError

DESCRIPTION = """Show the OpenCL platforms and devices a soak worker would see.

The query runs in a child process loading bare libOpenCL.so with the worker's
LD_LIBRARY_PATH, as MNN does: through soak's interposer, once as is and once
with --cl-gpu-override (CPU/accelerator devices reported as GPUs).  "GPU query"
is what MNN's OpenCL backend asks: clGetDeviceIDs(CL_DEVICE_TYPE_GPU)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--cl-real-lib", metavar="PATH", help="the real OpenCL library (default: libOpenCL.so.1)")
    p.add_argument("--no-intercept", dest="intercept", action="store_false", default=True,
                   help="query the real library directly, without the interposer")


def _child(env_extra: dict[str, str], lib: str) -> dict:
    env = dict(os.environ)
    env.update(env_extra)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "soak.cl.devinfo", "--lib", lib], env=env,
                          capture_output=True, text=True, timeout=120)
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise OpenCLSetupError(f"querying OpenCL through {lib} failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-400:] or 'no output'}",
                               "run `clinfo` to check the OpenCL install") from None
    if "error" in out:
        raise OpenCLSetupError(out["error"], out.get("hint"))
    return out


def collect(real_lib: str | None = None, intercept: bool = True) -> dict:
    from soak.cl import interposer

    real = interposer.find_real_library(real_lib)
    result: dict = {"real_lib": real, "interposer": None, "warnings": []}
    if not intercept:
        result["views"] = {"direct": _child({}, real)}
        return result
    bypass = interposer.mnn_bypass_paths()
    if bypass:
        result["warnings"].append(f"MNN would bypass the interposer: {bypass[0]} exists (MNN dlopens it before "
                                  f"libOpenCL.so); move it away or run with --no-intercept")
    lib = interposer.interposer_library()
    result["interposer"] = str(lib)
    views = {}
    with tempfile.TemporaryDirectory(prefix="soak-cl-info-") as tmp:
        for name, override in (("interposer", False), ("interposer+gpu_override", True)):
            env = interposer.prepare({"real_lib": real, "gpu_override": override}, Path(tmp) / name,
                                     interposer_dir=lib.parent, mnn_paths=())
            views[name] = _child(env, "libOpenCL.so")
    result["views"] = views
    return result


def _gib(n) -> str:
    return "?" if n is None else f"{n / (1 << 30):.1f} GiB"


def _print(result: dict) -> None:
    via = (f"through soak's interposer {result['interposer']} -> {result['real_lib']}" if result["interposer"]
           else f"directly from {result['real_lib']}")
    print(f"OpenCL as a worker sees it, {via}")
    for w in result["warnings"]:
        print(f"  WARNING: {w}")
    views = result["views"]
    base = views.get("interposer") or views["direct"]
    over = views.get("interposer+gpu_override")
    for pi, plat in enumerate(base["platforms"]):
        print(f"platform {pi}: {plat['name']} ({plat['vendor']}), {plat['version']}")
        oplat = over["platforms"][pi] if over and pi < len(over["platforms"]) else None
        for di, dev in enumerate(plat["devices"]):
            otype = ""
            if oplat and di < len(oplat["devices"]) and oplat["devices"][di]["type"] != dev["type"]:
                otype = f"  (with --cl-gpu-override: {'|'.join(oplat['devices'][di]['type'])})"
            print(f"  device {di}: {dev['name']}  type {'|'.join(dev['type'])}{otype}")
            print(f"    vendor {dev['vendor']}, driver {dev['driver_version']}, {dev['version']}, "
                  f"{dev['opencl_c_version']}")
            print(f"    global mem {_gib(dev['global_mem_size'])}, max alloc {_gib(dev['max_mem_alloc_size'])}, "
                  f"compute units {dev['max_compute_units']}, images {'yes' if dev['image_support'] else 'no'} "
                  f"(2D max {dev['image2d_max_width']}x{dev['image2d_max_height']}), "
                  f"fp16 {'yes' if dev['fp16'] else 'no'}")
        gq = plat["gpu_query"]
        line = f"  GPU query (what MNN asks): {gq['devices']} device(s), rc {gq['rc']}"
        if oplat:
            line += f"; with --cl-gpu-override: {oplat['gpu_query']['devices']} device(s)"
        print(line)


def run(args: argparse.Namespace) -> int:
    result = collect(args.cl_real_lib, args.intercept)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return int(ExitCode.OK)

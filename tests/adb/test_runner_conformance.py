"""soak-runner (C) and the Python worker answer the same commands alike.

Both are driven with one script over real pipes: loading errors of every
kind, bad lines, commands before open, a full engine session with faults
and prompts full of shell metacharacters.  Results must match field by
field (timings and message wording aside) and the log streams byte for byte.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from soak.native_build import ensure_built
from soak.worker import protocol

NASTY_PROMPTS = [
    b"$(touch /tmp/pwned) `id` ; rm -rf / ' \" \\ done",
    b"line one\nline two\r\n\ttabbed",
    b"nul\x00inside\x00",
    "你好 🙂 \u202e rtl".encode(),
    b"",
    b"-",
    b"\xff\xfe invalid utf-8 \xc3",
]

FAULTS = {
    "zero_work": True,
    "seed": 7,
    "faults": [
        {"kind": "cl_error", "at": 1, "code": -5, "info": "mapBuffer", "repeat": 2},
        {"kind": "log", "at": 2, "lines": ["Map error key_ptr == nullptr"]},
        {"kind": "sticky_error", "at": 3},
    ],
}

ABI2_ENGINE = r"""
#include <stddef.h>
#include <stdint.h>
uint32_t soak_engine_abi_version(void) { return 99; }  /* newer than any runner */
const char *soak_engine_name(void) { return "future"; }
void *soak_engine_create(const char *c, char *e, size_t n) { return 0; }
int soak_engine_set_config(void *e, const char *j) { return 0; }
int soak_engine_load(void *e) { return 0; }
int soak_engine_respond(void *e, const char *p, size_t n, int32_t m, void *cb, void *u) { return 0; }
int soak_engine_reset(void *e) { return 0; }
int soak_engine_reinit(void *e) { return 0; }
int soak_engine_status(void *e) { return 0; }
int soak_engine_perf(void *e, void *o) { return 0; }
void soak_engine_destroy(void *e) {}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("conformance")
    paths = {
        "runner": ensure_built("soak-runner"),
        "engine": ensure_built("soak_test_engine"),
    }
    (tmp / "abi2.c").write_text(ABI2_ENGINE)
    paths["abi2"] = tmp / "libabi2.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(paths["abi2"]), str(tmp / "abi2.c")], check=True)
    (tmp / "half.c").write_text("unsigned soak_engine_abi_version(void) { return 1; }\n")
    paths["half"] = tmp / "libhalf.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(paths["half"]), str(tmp / "half.c")], check=True)
    (tmp / "undef.c").write_text("extern int soak_no_such_symbol(void); int f(void) { return soak_no_such_symbol(); }\n")
    paths["undef"] = tmp / "libundef.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(paths["undef"]), str(tmp / "undef.c")], check=True)
    paths["text"] = tmp / "notes.txt"
    paths["text"].write_text("not a library\n")
    paths["config"] = tmp / "config.json"
    paths["config"].write_text(json.dumps(FAULTS))
    paths["bad_config"] = tmp / "bad.json"
    paths["bad_config"].write_text("{not json")
    paths["dir"] = tmp
    return paths


def _spec(lib, config, plugins=()) -> dict:
    return {"kind": "native", "engine_lib": str(lib), "plugins": [str(p) for p in plugins], "config_path": str(config)}


def script(p: dict[str, Path]) -> list[bytes]:
    c = protocol.encode_command
    lines = [
        b"bogus 1\n", b"respond x 5 -\n", b"load\n", b"\n", b"   \n",
        c("status", 2), c("respond", 3, 8, b"hi"), c("load", 4), c("close", 5),
        c("open", 6, _spec("/nonexistent/libsoak.so", p["config"])),
        c("open", 7, _spec(p["dir"], p["config"])),
        c("open", 8, _spec(p["text"], p["config"])),
        c("open", 9, _spec(p["half"], p["config"])),
        c("open", 10, _spec(p["abi2"], p["config"])),
        c("open", 11, _spec(p["engine"], p["config"], plugins=[p["undef"]])),
        c("open", 12, _spec(p["engine"], p["config"], plugins=["/nonexistent/libMNN_CL.so"])),
        c("open", 13, _spec(p["engine"], p["bad_config"])),
        b"open 14 !!notbase64!!\n",
        c("open", 15, {"kind": "native", "config_path": str(p["config"])}),
        c("open", 16, _spec(p["engine"], p["config"])),
        b"set_config 17 %s\n" % base64.b64encode(b"\xff\xfe"),
        c("set_config", 18, {"backend_type": "opencl"}),
        c("set_config", 19, b"[1, 2]"),
        c("load", 20),
        b"respond 21 8\n", b"respond 22 eight -\n", b"respond 23 8 %%%%\n",
    ]
    cmd_id = 30
    for i, prompt in enumerate(NASTY_PROMPTS):
        if i % 2:  # the config as a command of its own, or set by the respond first (as soak sends it)
            lines.append(c("set_config", cmd_id, {"soak_iteration": i}))
            lines.append(c("respond", cmd_id + 1, 12, prompt))
        else:
            lines.append(c("respond", cmd_id + 1, 12, prompt, json.dumps({"soak_iteration": i})))
        lines.append(c("status", cmd_id + 2))
        cmd_id += 3
    # a config the respond sets first that is refused, or not base64: the respond does not run
    lines += [c("respond", 55, 4, b"refused", b"\xff\xfe"), b"respond 56 4 - %%%%\n"]
    lines += [
        c("reset", 60), c("reinit", 61), c("respond", 62, -1, b"after reinit"), b"respond 63 4 - extra words\n",
        c("close", 64), c("status", 65), c("open", 66, _spec(p["engine"], p["config"])), c("load", 67),
        c("respond", 68, 3, b"again"), c("quit", 69),
        c("status", 70),  # after quit: never answered
    ]
    return lines


def drive(argv: list[str], lines: list[bytes], progress: list[dict] | None = None) -> tuple[list[dict], bytes, int]:
    """Results in order; progress lines (their number depends on timing) go to `progress`."""
    proc = subprocess.run(argv, input=b"".join(lines), capture_output=True, timeout=60)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    if progress is not None:
        progress += [r for r in results if r.get("op") == "progress"]
    return [r for r in results if r.get("op") != "progress"], proc.stderr, proc.returncode


def normalise(result: dict) -> dict:
    r = dict(result)
    for key in ("wall_us", "engine_us", "pid", "runner", "version", "package", "error", "hint"):
        r.pop(key, None)
    if result.get("error") is not None:
        r["has_error"] = True
    if "hint" in result:
        r["has_hint"] = result["hint"] is not None
    if "timing" in r:  # which timings exist follows from the chunks; their values do not match
        r["timing"] = {k: v is not None for k, v in r["timing"].items()}
    if "perf" in r:
        r["perf"] = {k: v for k, v in r["perf"].items() if k in ("prompt_tokens", "generated_tokens")}
    return r


def test_runner_matches_python_worker(built):
    lines = script(built)
    py_progress: list[dict] = []
    c_progress: list[dict] = []
    py_results, py_log, py_rc = drive([sys.executable, "-m", "soak.worker"], lines, py_progress)
    c_results, c_log, c_rc = drive([str(built["runner"])], lines, c_progress)

    assert py_results[0]["runner"] == "python" and c_results[0]["runner"] == "native"
    assert py_rc == c_rc == 0
    assert len(c_results) == len(py_results)
    for py, c in zip(py_results, c_results):
        assert normalise(c) == normalise(py), f"differs for {py.get('op')} {py.get('id')}: {py.get('error')}"
    assert c_log == py_log

    # the script really exercised what it claims to
    kinds = {r.get("error_kind") for r in c_results}
    assert {"missing_library", "missing_symbol", "wrong_arch", "abi_mismatch", "create_failed",
            "bad_command", "engine_error"} <= kinds
    outputs = [base64.b64decode(r["output_b64"]) for r in c_results if "output_b64" in r]
    assert len(outputs) >= len(NASTY_PROMPTS)
    assert b"CL ERROR CODE : -5, info:mapBuffer" in c_log
    assert c_log.count(b"\x1esoak:done ") == sum(1 for r in c_results if r.get("id", -1) >= 0)
    assert c_results[-1]["op"] == "quit"

    # streaming: these responds end within the progress interval, so they send no progress lines
    # (test_progress_lines_* below: the ones that last); any that a slow machine makes are the
    # respond's own
    streamed = {r["id"] for r in c_results if r.get("op") == "respond" and r.get("timing", {}).get("ttft_us") is not None}
    assert len(streamed) >= 5  # the sticky error at iteration 3 silences some
    for progress in (py_progress, c_progress):
        assert {p["id"] for p in progress} <= streamed and all(p["tokens"] >= 1 for p in progress)
    # a config set first: run, refused (the respond does not run), not base64
    by_id = {r.get("id"): r for r in c_results}
    assert by_id[31]["ok"] and by_id[31]["timing"]["ttft_us"] is not None
    assert by_id[55]["error_kind"] == "bad_command" and "output_b64" not in by_id[55]
    assert by_id[56]["error_kind"] == "bad_command" and "output_b64" not in by_id[56]
    assert all(r["streams"] is True for r in c_results if r.get("op") == "open" and r["ok"])
    # both time the engine's own respond call (soak's share of an iteration = wall - engine)
    for results in (py_results, c_results):
        called = [r for r in results if r.get("op") == "respond" and r.get("timing")]
        assert called and all(0 <= r["engine_us"] <= r["wall_us"] for r in called)
        assert all("engine_us" not in r for r in results if r.get("op") != "respond")


STREAMING = {"decode_tok_per_s": 20000, "prefill_tok_per_s": 200000, "stop_probability": 0, "seed": 7,
             "faults": [{"kind": "hang", "at": [1], "after_tokens": 1, "seconds": 0.7}]}


@pytest.mark.parametrize("worker", ["python", "native"])
def test_progress_lines_wait_for_the_interval_and_report_a_chunk_left_alone(built, worker):
    """A respond that ends within PROGRESS_INTERVAL_S sends no progress line (its result says
    all: one wake-up of the supervisor, not two).  One that stalls right after its first chunk
    still reports that chunk within the interval and the watch period, though no chunk follows
    to carry the line: the supervisor's stall timer needs it."""
    config = built["dir"] / "streaming.json"
    config.write_text(json.dumps(STREAMING))
    c = protocol.encode_command
    lines = [c("open", 1, _spec(built["engine"], config)), c("load", 2),
             c("respond", 3, 12, b"fast", json.dumps({"soak_iteration": 0})),
             c("respond", 4, 12, b"stalls after one token", json.dumps({"soak_iteration": 1})), c("quit", 5)]
    argv = [sys.executable, "-m", "soak.worker"] if worker == "python" else [str(built["runner"])]
    progress: list[dict] = []
    results, _, rc = drive(argv, lines, progress)
    assert rc == 0 and all(r["ok"] for r in results[1:])
    fast, stalled = results[3], results[4]
    assert fast["timing"]["ttft_us"] is not None and fast["wall_us"] < 100_000
    assert [p for p in progress if p["id"] == 3] == []
    assert stalled["timing"]["itl_max_us"] >= 600_000 and stalled["perf"]["generated_tokens"] == 12
    first = [p for p in progress if p["id"] == 4][0]
    assert first["tokens"] == 1  # sent while the engine sat in its 0.7 s stall: the watch thread's line


def test_runner_logs_before_marker_and_marker_before_result(built):
    """Each command's engine lines precede its marker (supervisor relies on it)."""
    c = protocol.encode_command
    lines = [c("open", 1, _spec(built["engine"], built["config"])), c("load", 2),
             c("set_config", 3, {"soak_iteration": 1}), c("respond", 4, 4, b"x"), c("quit", 5)]
    _, log, _ = drive([str(built["runner"])], lines)
    cl = log.index(b"CL ERROR CODE")
    assert log.index(b"\x1esoak:done 3\n") < cl < log.index(b"\x1esoak:done 4\n")


def test_runner_version_and_usage(built):
    out = subprocess.run([str(built["runner"]), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "protocol 1" in out.stdout
    bad = subprocess.run([str(built["runner"]), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_runner_survives_huge_prompt(built):
    c = protocol.encode_command
    prompt = bytes(range(256)) * 4096  # 1 MiB, every byte value
    lines = [c("open", 1, _spec(built["engine"], built["config"])), c("load", 2), c("respond", 3, 4, prompt),
             c("quit", 4)]
    results, _, rc = drive([str(built["runner"])], lines)
    assert rc == 0
    assert results[3]["ok"] and results[3]["perf"]["prompt_tokens"] == 1 + len(prompt) // 4

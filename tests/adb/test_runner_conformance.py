"""soak-runner (C) and the Python worker answer the same commands alike.

Both are driven with one script over real pipes: loading errors of every
kind, bad lines, commands before open, a full engine session with faults
and prompts full of shell metacharacters, and the logits oracle's `reference`
and `check` (clean, with injected logit faults, on engines without the oracle,
with bad payloads).  Results must match field by field (timings and message
wording aside; the oracle's measures to 1e-9 relative) and the log streams
byte for byte.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from soak.native_build import ensure_built
from soak.oracle import wire
from soak.oracle.reference import RefTurn, pack_ids, unpack_ids, unpack_steps
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


# the logits oracle: a synthetic model with logit faults at given iterations (native/test_engine/FAULTS.md)
ORACLE = {
    "zero_work": True,
    "seed": 5,
    "stop_probability": 0.05,
    "faults": [
        {"kind": "logits_noise", "at": [2], "sigma": 4, "step": 3},
        {"kind": "logits_nonfinite", "at": [3], "step": 2},
        {"kind": "logits_nonfinite", "at": [4], "value": "nan", "count": 1 << 20, "step": 1},
        {"kind": "logits_stale", "at": [5], "step": 4, "steps": 1},
        {"kind": "logits_nonfinite", "at": [6], "value": "inf", "step": 0},
        {"kind": "sticky_error", "at": [7]},
    ],
}

# engines without the oracle: ABI v1, and ABI 2 with only some of its functions
NO_ORACLE = r"""
#include <stddef.h>
#include <stdint.h>
static int dummy;
uint32_t soak_engine_abi_version(void) { return ABI; }
const char *soak_engine_name(void) { return "no-oracle"; }
void *soak_engine_create(const char *c, char *e, size_t n) { return &dummy; }
int soak_engine_set_config(void *e, const char *j) { return 0; }
int soak_engine_load(void *e) { return 0; }
int soak_engine_respond(void *e, const char *p, size_t n, int32_t m, void *cb, void *u) { return 0; }
int soak_engine_reset(void *e) { return 0; }
int soak_engine_reinit(void *e) { return 0; }
int soak_engine_status(void *e) { return 1; }
int soak_engine_perf(void *e, void *o) { return 0; }
void soak_engine_destroy(void *e) {}
int soak_engine_tokenize(void *e, const char *p, size_t n, const int32_t **ids, size_t *k) { return 0; }
int soak_engine_is_stop(void *e, int32_t id) { return 0; }
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
    paths["oracle_config"] = tmp / "oracle.json"
    paths["oracle_config"].write_text(json.dumps(ORACLE))
    for name, abi in (("v1", 1), ("partial", 2)):
        (tmp / f"{name}.c").write_text(NO_ORACLE)
        paths[name] = tmp / f"lib{name}.so"
        subprocess.run(["cc", "-shared", "-fPIC", f"-DABI={abi}", "-o", str(paths[name]), str(tmp / f"{name}.c")],
                       check=True)
    paths["oracle_lib"] = ensure_built("soak_oracle")
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
        c("respond", 68, 3, b"again"),
    ]
    lines += oracle_script(p)
    lines += [c("quit", 69), c("status", 70)]  # after quit: never answered
    return lines


CONVERSATION = [b"what is the capital of France?", b"and of Italy?"]


def reference_turns(p: dict[str, Path], prompts: list[bytes], max_new: int, k: int) -> list[RefTurn]:
    """The turns of one conversation as the oracle made them (the Python worker's `reference`, whose
    results the script compares too), turn i at iteration i."""
    c = protocol.encode_command
    lines = [c("open", 1, _spec(p["engine"], p["oracle_config"])), c("load", 2)]
    lines += [c("reference", 3 + i, wire.reference_request(prompt, max_new, k, str(p["oracle_lib"]),
                                                           {"soak_iteration": i})) for i, prompt in enumerate(prompts)]
    results, _, _ = drive([sys.executable, "-m", "soak.worker"], lines + [c("quit", 99)])
    assert all(r["ok"] for r in results[1:]), results
    return [wire.turn_from_result(r, k, (0, i, i)) for i, r in enumerate(results[3:3 + len(prompts)])]


def oracle_script(p: dict[str, Path]) -> list[bytes]:
    """`reference` and `check`, ids 100 on: a checked conversation holds the reference's history (a
    reset, then its turns in order), at iterations whose logit faults (ORACLE) differ."""
    c = protocol.encode_command
    lib = str(p["oracle_lib"])
    first, second = reference_turns(p, CONVERSATION, 24, 10)
    wide, = reference_turns(p, ["你好 🙂 \x00 bytes".encode()], 12, 64)

    def check(cmd_id, turn, iteration, k=10, limits=(1.0, 0.05), **over):
        req = wire.check_request(turn, k, limits or (), lib, {"soak_iteration": iteration})
        return c("check", cmd_id, {**req, **({"limits": None} if limits is None else {}), **over})

    lines = [
        # before an engine can serve it, and bad payloads (the Python worker's ValueError/KeyError)
        c("open", 100, _spec(p["v1"], p["config"])), c("load", 101),
        c("check", 102, wire.check_request(first, 10, (1.0, 0.05), lib)),
        c("reference", 103, wire.reference_request(b"hi", 4, 10, lib)),
        c("open", 104, _spec(p["partial"], p["config"])), c("load", 105),
        c("check", 106, wire.check_request(first, 10, (1.0, 0.05), lib)),
        c("open", 110, _spec(p["engine"], p["oracle_config"])), c("load", 111),
        # the first forward's out-of-vocabulary id: the engine refuses it (the workers learn the vocabulary
        # from a forward's logits: below, they refuse it themselves)
        check(123, RefTurn(0, 0, 0, (5, 1 << 20), first.steps, first.end), 0),
        b"check 112\n", b"reference 113 %%%%\n", c("check", 114, b"{not json"), c("check", 115, b"\xff\xfe"),
        c("check", 116, {"topk": 10, "steps": "", "end": "stop", "lib": lib}),
        c("reference", 117, {"prompt": "not base64!", "max_new": 4, "topk": 10, "lib": lib}),
        check(118, first, 0, input_ids="AAA"),
        check(119, first, 0, steps="AAAAAAAA"),
        check(120, first, 0, topk=65),
        check(121, first, 0, limits=[1.0]),
        c("reference", 122, wire.reference_request(b"x", 4, 0, lib)),
        # an out-of-vocabulary id once the worker knows the vocabulary; no ids at all
        check(124, first, 0),
        check(125, RefTurn(0, 0, 0, (5, 1 << 20), first.steps, first.end), 0),
        check(126, RefTurn(0, 0, 0, (), first.steps, first.end), 0),
        # the reference's conversation made again, then teacher-forced turn after turn; then its first
        # turn alone at iterations with logit faults
        c("reset", 130), c("reference", 131, wire.reference_request(CONVERSATION[0], 24, 10, lib, {"soak_iteration": 0})),
        c("reference", 160, wire.reference_request(CONVERSATION[1], 24, 10, lib, {"soak_iteration": 1})),
        c("reset", 132), check(133, first, 0), check(161, second, 1),
        c("reset", 162), check(134, first, 1, limits=None),
        c("reset", 163), check(135, first, 2), c("reset", 164), check(136, first, 3),
        c("reset", 165), check(137, first, 4), c("reset", 166), check(138, first, 5),
        c("reference", 139, wire.reference_request(b"nan", 4, 10, lib, {"soak_iteration": 6})),
        c("reset", 140), check(141, wide, 1, k=64),
        c("reference", 142, wire.reference_request(b"zero", 0, 10, lib, {"soak_iteration": 1})),
        check(143, RefTurn(0, 0, 0, first.input_ids, (), "length"), 1),
        check(144, first, 7), c("reinit", 145), check(146, first, 8),
        c("check", 147, {**wire.check_request(first, 10, (1.0, 0.05), lib), "config": [1, 2]}),
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
    if "oracle" in r:  # the turn's forward times differ; its measures are compared by same_measures
        r["oracle"] = {k: v for k, v in r["oracle"].items() if k not in ("prefill_us", "decode_us")}
        r["oracle"] = {k: (v if v is None or isinstance(v, int) else float) for k, v in r["oracle"].items()}
    return r


def same_measures(c: dict, py: dict, rel: float = 1e-9) -> bool:
    """The oracle's summaries agree: the same keys, the same integers and nulls, floats to `rel`."""
    if c.keys() != py.keys():
        return False
    for k, v in py.items():
        if k in ("prefill_us", "decode_us"):
            continue
        w = c[k]
        if isinstance(v, float) and isinstance(w, float):
            if abs(w - v) > rel * max(abs(v), abs(w)):
                return False
        elif v != w or type(v) is not type(w):
            return False
    return True


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
        if "oracle" in py:
            assert same_measures(c["oracle"], py["oracle"]), (py["id"], c["oracle"], py["oracle"])
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
    # both time the engine's own respond call (soak's share of an iteration = wall - engine), and the
    # oracle's turns
    for results in (py_results, c_results):
        called = [r for r in results if r.get("op") == "respond" and r.get("timing")]
        called += [r for r in results if r.get("op") in ("reference", "check") and r["ok"]]
        assert called and all(0 <= r["engine_us"] <= r["wall_us"] for r in called)
        assert all("engine_us" not in r for r in results if r.get("op") not in ("respond", "reference", "check"))


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


def test_oracle_commands_agree_and_the_script_exercises_them(built):
    """What the oracle part of the script shows (the first test: both workers alike), said plainly."""
    lines = script(built)
    results, _, rc = drive([str(built["runner"])], lines)
    assert rc == 0
    by_id = {r.get("id"): r for r in results}
    # engines without the oracle: the open says why, in the Python worker's words; a check is refused
    assert by_id[100]["oracle_unavailable"].startswith("it implements engine ABI v1; the oracle functions")
    assert by_id[104]["oracle_unavailable"] == "it lacks soak_engine_forward, soak_engine_token_bytes"
    assert by_id[110]["oracle_unavailable"] is None
    for i in (102, 103, 106):
        assert by_id[i]["error_kind"] == "engine_error" and "cannot" in by_id[i]["error"] and by_id[i]["hint"]
    assert all(by_id[i]["error_kind"] == "bad_command" for i in (112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122))
    assert by_id[123]["error_kind"] == "engine_error" and by_id[125]["error_kind"] == "bad_input"
    assert by_id[126]["error_kind"] == "bad_input"
    # the conversation's reference made here is the Python worker's, byte for byte
    first, second = reference_turns(built, CONVERSATION, 24, 10)
    for i, turn in zip((131, 160), (first, second)):
        assert by_id[i]["turn"] == {"input_ids": pack_ids(turn.input_ids), "steps": by_id[i]["turn"]["steps"],
                                    "n": len(turn.steps), "end": turn.end}
        assert unpack_steps(by_id[i]["turn"]["steps"], 10) == turn.steps
    assert base64.b64decode(by_id[131]["output_b64"]) == base64.b64decode(by_id[133]["output_b64"])
    clean, free, noise, nonfinite, all_nan, stale = (by_id[i]["oracle"] for i in range(133, 139))
    # teacher-forced turn after turn on the reference's history: every step agrees
    for checked, turn in ((clean, first), (by_id[161]["oracle"], second)):
        assert checked["steps"] == len(turn.steps) > 3 and checked["flips"] == 0 and checked["abs_max"] < 1e-5
        assert checked["first_over"] is None and checked["input_tokens"] == len(turn.input_ids)
    assert free["first_over"] is None            # no limits: no first step over them
    assert noise["first_over"] == 3 and noise["abs_max"] > 1.0
    assert nonfinite["first_nonfinite"] == 2 and nonfinite["nonfinite_steps"] >= 1
    # every logit NaN from step 1 on: the measures that can't be numbers travel as null (JSON-safe)
    assert all_nan["first_nonfinite"] == 1 and all_nan["kl_max"] is None and all_nan["nll"] is None
    assert all_nan["abs_max"] is None and all_nan["rank_max"] == 1 << 30
    assert stale["first_over"] == 4
    assert by_id[139]["error_kind"] == "bad_command" and "not finite" in by_id[139]["error"]
    assert by_id[141]["ok"] and by_id[141]["oracle"]["steps"] > 0
    assert by_id[142]["turn"]["n"] == 0 and by_id[143]["oracle"]["steps"] == 0
    assert by_id[144]["error_kind"] == "engine_error" and by_id[146]["ok"]   # sticky error, then reinit
    assert by_id[147]["error_kind"] == "engine_error"                        # a config the engine refuses

"""The logits oracle's entry points (soak_engine.h, ABI 2) on the test engine.

The test engine's forward() is a synthetic model: seeded hash logits of the
turn's input ids, its last three tokens and the step (native/test_engine/
FAULTS.md, "Logits").  These tests pin what the oracle relies on: the numbers
are the same in every process, they behave like a model's (finite, a clear
top-1 most of the time, a greedy turn that ends), and each injected logits
fault changes exactly the steps and iterations it names.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from soak.engine import abi
from soak.engine.loader import NativeEngine
from soak.errors import AbiMismatch, BadInput, EngineError, OracleUnavailable
from soak.native_build import build_test_engine

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [b"What does the GPU do at night?", b"a", b"", b"nul\x00inside", "你好, 世界 🙂".encode()]


def make_engine(tmp_path: Path, faults=(), **config) -> NativeEngine:
    cfg = tmp_path / f"engine-{len(list(tmp_path.glob('engine-*')))}.json"
    cfg.write_text(json.dumps({"seed": 3, "zero_work": True, "faults": list(faults), **config}))
    engine = NativeEngine(str(build_test_engine()), str(cfg))
    assert engine.load()
    return engine


def turn(engine: NativeEngine, prompt: bytes, max_new: int = 40, iteration: int = 0, feed=None,
         keep_history: bool = False):
    """One turn through forward: greedy (feed=None) or teacher-forced on `feed`, after a reset unless
    keep_history (the synthetic model's logits depend on the history, as a KV cache does).
    Returns (input ids, generated/fed ids, the logits of every step as lists)."""
    if not keep_history:
        engine.reset()
    engine.set_config(json.dumps({"soak_iteration": iteration}))
    ids = engine.tokenize(prompt)
    steps = [list(engine.forward(ids, True))]
    out = []
    for n in range(max_new):
        token = feed[n] if feed is not None else max(range(len(steps[-1])), key=steps[-1].__getitem__)
        out.append(token)
        if engine.is_stop(token) or n + 1 == max_new or (feed is not None and n + 1 == len(feed)):
            break
        steps.append(list(engine.forward([token], False)))
    return ids, out, steps


def digest(rows) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps([repr(v) for v in row]).encode())
    return h.hexdigest()


def max_abs_diff(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def test_the_test_engine_serves_the_oracle(tmp_path):
    engine = make_engine(tmp_path)
    assert engine.oracle_available and engine.oracle_unavailable is None
    for prompt in PROMPTS:
        ids = engine.tokenize(prompt)
        # the ids respond() counts for the same prompt
        engine.respond(prompt, 4)
        assert len(ids) == engine.perf()["prompt_tokens"] == 1 + len(prompt) // 4
    ids, out, steps = turn(engine, PROMPTS[0], max_new=200)
    assert engine.is_stop(out[-1]), "a greedy turn of the synthetic model ends with the stop token"
    assert 3 <= len(out) < 80
    vocab = engine.vocab
    assert vocab == len(steps[0]) > 256
    assert all(math.isfinite(v) for row in steps for v in row)
    # margins like a model's: mostly a clear top-1, never all equal
    margins = [sorted(row)[-1] - sorted(row)[-2] for row in steps]
    assert min(margins) > 0 and sum(m > 0.05 for m in margins) >= len(margins) * 0.8
    perf = engine.perf()
    assert perf["prompt_tokens"] == len(ids) and perf["generated_tokens"] == len(steps) - 1
    # the text of the turn: the tokens' bytes, the stop token has none
    assert engine.token_bytes(out[-1]) == b""
    assert all(engine.token_bytes(t) for t in out[:-1])
    assert engine.token_bytes(1) == b" the" and engine.token_bytes(vocab - 1)


def test_logits_are_deterministic_across_processes(tmp_path):
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from tests.core.test_engine_logits import make_engine, turn, digest, PROMPTS\n"
        "e = make_engine(Path(sys.argv[2]))\n"
        "rows = []\n"
        "for p in PROMPTS:\n"
        "    rows += turn(e, p, 30)[2]\n"
        "print(digest(rows))\n")
    digests = []
    for n in range(2):
        folder = tmp_path / str(n)
        folder.mkdir()
        proc = subprocess.run([sys.executable, "-c", script, str(REPO), str(folder)], capture_output=True,
                              text=True, timeout=120, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        digests.append(proc.stdout.strip().splitlines()[-1])
    engine = make_engine(tmp_path)
    here = digest([row for p in PROMPTS for row in turn(engine, p, 30)[2]])
    assert digests[0] == digests[1] == here


def test_a_turn_depends_on_the_history_since_reset_and_its_tokens(tmp_path):
    """Like a model's KV cache: earlier turns of the conversation (forward or respond) change a turn's
    logits; after reset() a turn is what it is on a fresh engine."""
    fresh = turn(make_engine(tmp_path), PROMPTS[0])
    a, b = make_engine(tmp_path), make_engine(tmp_path)
    turn(a, b"an earlier turn of another length", 17)
    b.respond(b"a respond turn in between", 9)
    assert turn(a, PROMPTS[0], keep_history=True)[2][0] != fresh[2][0]
    assert turn(b, PROMPTS[0], keep_history=True)[2][0] != fresh[2][0]
    assert turn(a, PROMPTS[0])[2] == turn(b, PROMPTS[0])[2] == fresh[2]     # each after a reset
    # ... on its prompt, and on every token fed
    base = turn(a, PROMPTS[0])
    assert turn(a, PROMPTS[0] + b"?")[2][0] != base[2][0]
    forced = turn(a, PROMPTS[0], feed=[base[1][0], 5, 6, 7])
    assert forced[2][1] == base[2][1] and forced[2][2] != base[2][2]
    # the seed is the model: another seed, other logits
    assert turn(make_engine(tmp_path, seed=4), PROMPTS[0])[2][0] != base[2][0]


def test_vocab_size_and_bad_ids(tmp_path):
    engine = make_engine(tmp_path, vocab_size=5000)
    assert len(engine.forward(engine.tokenize(b"x"), True)) == 5000 == engine.vocab
    assert engine.token_bytes(4999) == b" t4999"
    for bad in (-1, 5000, "7"):
        with pytest.raises(BadInput, match="vocabulary"):
            engine.forward([bad], False)
    with pytest.raises(EngineError, match="ERR_INVALID_ARG"):
        engine.token_bytes(5000)
    with pytest.raises(EngineError):
        make_engine(tmp_path, vocab_size=10)


def test_a_step_needs_its_turn(tmp_path):
    engine = make_engine(tmp_path)
    with pytest.raises(EngineError, match="ERR_STATE"):
        engine.forward([5], False)
    engine.forward(engine.tokenize(b"hi"), True)
    engine.forward([5], False)
    engine.respond(b"a free turn ends the forward turn", 3)
    with pytest.raises(EngineError, match="ERR_STATE"):
        engine.forward([5], False)
    engine.forward([1, 2], True)
    engine.reset()
    with pytest.raises(EngineError, match="ERR_STATE"):
        engine.forward([5], False)


def test_sticky_error_in_a_forward_turn(tmp_path, capfd):
    engine = make_engine(tmp_path, [{"kind": "sticky_error", "at": 2}])
    turn(engine, b"fine", iteration=1)
    engine.set_config('{"soak_iteration": 2}')
    with pytest.raises(EngineError, match="ERR_ENGINE"):
        engine.forward(engine.tokenize(b"broken"), True)
    assert engine.status() == abi.STATUS["INTERNAL_ERROR"]
    engine.set_config('{"soak_iteration": 3}')
    with pytest.raises(EngineError, match="ERR_STATE"):
        engine.forward(engine.tokenize(b"refused"), True)
    assert "LLM in error state. Status: 4" in capfd.readouterr().out
    engine.reinit()     # (MNN's generate_init keeps the history; turn() resets first)
    assert turn(engine, b"fine", iteration=1)[2] == turn(make_engine(tmp_path), b"fine", iteration=1)[2]


FAULT_CASES = {
    # kind spec, how the faulted logits must differ from the clean ones at the steps it hits
    "small_noise": ({"kind": "logits_noise", "sigma": 0.05}, lambda a, b: 0.01 < max_abs_diff(a, b) < 0.3),
    "large_error": ({"kind": "logits_noise", "sigma": 4}, lambda a, b: max_abs_diff(a, b) > 5),
    "nan": ({"kind": "logits_nonfinite"}, lambda a, b: sum(math.isnan(v) for v in b) == 1
            and b.index(next(v for v in b if math.isnan(v))) == a.index(max(a))),
    "inf": ({"kind": "logits_nonfinite", "value": "-inf", "count": 3},
            lambda a, b: sum(v == -math.inf for v in b) == 3),
    "garbage": ({"kind": "garbage"}, lambda a, b: max_abs_diff(a, b) > 5),
}


@pytest.mark.parametrize("name", sorted(FAULT_CASES))
def test_each_logits_fault_changes_the_steps_it_names(tmp_path, name):
    spec, differs = FAULT_CASES[name]
    clean = make_engine(tmp_path)
    faulty = make_engine(tmp_path, [{**spec, "at": [5, 7], "step": 2, "steps": 3}])
    _, ref_ids, ref = turn(clean, PROMPTS[0], 12, iteration=5)
    # teacher-forced on the clean trajectory, as the oracle drives a candidate
    for iteration in (4, 5, 6, 7):
        _, _, got = turn(faulty, PROMPTS[0], 12, iteration=iteration, feed=ref_ids)
        for step, (a, b) in enumerate(zip(ref, got)):
            hit = iteration in (5, 7) and 2 <= step < 5
            if hit:
                assert differs(a, b), (name, iteration, step)
            else:
                assert a == b, (name, iteration, step)


def test_a_stale_step_repeats_the_previous_logits(tmp_path):
    clean = make_engine(tmp_path)
    faulty = make_engine(tmp_path, [{"kind": "logits_stale", "at": 1, "step": 3, "steps": 1}])
    _, ids, ref = turn(clean, PROMPTS[0], 10, iteration=1)
    _, _, got = turn(faulty, PROMPTS[0], 10, iteration=1, feed=ids)
    assert got[3] == got[2] == ref[2] and got[3] != ref[3]
    assert got[:3] == ref[:3] and got[4:] == ref[4:]
    # the same through cl_error's corrupt flag (MNN's dead queue), from step 0 on: the
    # prefill repeats the last turn's logits, every later step its own previous ones
    corrupt = make_engine(tmp_path, [{"kind": "cl_error", "at": 2, "corrupt": True}])
    turn(corrupt, PROMPTS[1], 5, iteration=1)
    last = list(corrupt.forward([3], False))
    _, _, dead = turn(corrupt, PROMPTS[0], 6, iteration=2, feed=ids, keep_history=True)
    assert all(row == last for row in dead)


def test_noise_that_grows_over_the_run(tmp_path):
    clean = make_engine(tmp_path)
    faulty = make_engine(tmp_path, [{"kind": "logits_noise", "from": 10, "sigma": 0.01, "growth": 1.0}])
    _, ids, ref = turn(clean, PROMPTS[0], 8)
    spread = []
    for iteration in (10, 20, 40):
        _, _, got = turn(faulty, PROMPTS[0], 8, iteration=iteration, feed=ids)
        spread.append(max(max_abs_diff(a, b) for a, b in zip(ref, got)))
    assert spread[0] < spread[1] < spread[2] and spread[2] > 10 * spread[0]


def test_a_v1_library_runs_without_the_oracle(tmp_path):
    names = ["name", "create", "set_config", "load", "respond", "reset", "reinit", "status", "perf", "destroy"]
    body = ("#include <stdint.h>\n"
            "static int dummy;\n"
            "uint32_t soak_engine_abi_version(void){return 1;}\n"
            "const char *soak_engine_name(void){return \"old\";}\n"
            "void *soak_engine_create(const char *c, char *e, unsigned long n){return &dummy;}\n"
            + "".join(f"int soak_engine_{n}(void){{return 0;}}\n" for n in names[2:]))
    src = tmp_path / "old.c"
    src.write_text(body)
    lib = tmp_path / "libold.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    engine = NativeEngine(str(lib), str(cfg))
    assert engine.load() and engine.respond(b"hi", 3) == b""
    assert not engine.oracle_available and "ABI v1" in engine.oracle_unavailable
    with pytest.raises(OracleUnavailable, match="came with v2") as err:
        engine.forward([1], True)
    assert err.value.exit_code == 5
    # a v2 library that lacks one oracle function: no oracle, and it says which
    (tmp_path / "half.c").write_text(body.replace("return 1;", "return 2;")
                                     + "int soak_engine_tokenize(void){return 0;}\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "libhalf.so"), str(tmp_path / "half.c")],
                   check=True)
    half = NativeEngine(str(tmp_path / "libhalf.so"), str(cfg))
    assert "lacks soak_engine_forward" in half.oracle_unavailable
    with pytest.raises(OracleUnavailable):
        half.tokenize(b"x")
    # a library newer than this soak is refused
    (tmp_path / "new.c").write_text(body.replace("return 1;", f"return {abi.ABI_VERSION + 1};"))
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "libnew.so"), str(tmp_path / "new.c")],
                   check=True)
    with pytest.raises(AbiMismatch, match=f"v{abi.ABI_MIN_VERSION} to v{abi.ABI_VERSION}"):
        NativeEngine(str(tmp_path / "libnew.so"), str(cfg))


def test_the_oracle_drives_the_test_engine_and_sees_each_fault(tmp_path):
    """soak.oracle.teacher on this forward: a reference from one engine, teacher-forced turns on
    another; clean agrees exactly, each logits fault shows at the step it was injected."""
    from soak.oracle import native, teacher

    lib = native.load()
    oracle = make_engine(tmp_path)
    oracle.set_config('{"soak_iteration": 1}')
    ref = teacher.reference_turn(oracle, lib, oracle.tokenize(PROMPTS[0]), 30, 8)
    assert len(ref.steps) >= 4

    def check(faults):
        engine = make_engine(tmp_path, faults)
        engine.set_config('{"soak_iteration": 1}')
        return teacher.check_turn(engine, lib, ref)

    clean = check([])
    assert clean["steps"] == len(ref.steps) and clean["flips"] == 0 and clean["nonfinite_steps"] == 0
    assert clean["kl_max"] < 1e-9 and clean["abs_max"] < 1e-4      # the reference keeps float32
    noisy = check([{"kind": "logits_noise", "at": 1, "sigma": 4, "step": 2, "steps": 1}])
    assert noisy["abs_max_step"] == 2 and noisy["abs_max"] > 1 and noisy["kl_max_step"] == 2
    nan = check([{"kind": "logits_nonfinite", "at": 1, "step": 3}])
    assert nan["first_nonfinite"] == 3 and nan["nonfinite_steps"] == len(ref.steps) - 3
    stale = check([{"kind": "logits_stale", "at": 1, "step": 1, "steps": 1}])
    assert stale["abs_max_step"] == 1 and stale["abs_max"] > 1

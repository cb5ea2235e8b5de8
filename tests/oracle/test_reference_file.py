"""The reference file: streamed, compact, keyed, and safe against damage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from soak.errors import BadInput
from soak.oracle import native
from soak.oracle.reference import KEY_FIELDS, Reference, ReferenceWriter, RefTurn

KEY = {"model_sha256": "ab" * 32, "seed": 7, "workload": {"max_new_tokens": 32, "turns": [1, 4]},
       "soak_version": "0.1.0"}


def make_turns(n_turns=3, steps=20, vocab=2048, k=10):
    lib = native.load()
    rng = np.random.default_rng(0)
    turns = []
    for t in range(n_turns):
        refs = []
        for _ in range(steps):
            refs.append(lib.topk(rng.standard_normal(vocab).astype(np.float32), k))
        turns.append(RefTurn(0, t, t, tuple(int(i) for i in rng.integers(0, vocab, 30 + t)), tuple(refs), "length"))
    return turns


def test_round_trip_is_exact_and_compact(tmp_path):
    path = tmp_path / "ref.jsonl"
    turns = make_turns()
    with ReferenceWriter(path, KEY, {"engine": "mnn-pip", "backend": "cpu", "precision": "high"}) as w:
        sizes = [w.add(t) for t in turns]
    per_step = max(s / len(t.steps) for s, t in zip(sizes, turns))
    assert per_step <= 200, per_step       # issue 23: <= 200 bytes a step (input ids included)
    with Reference(path) as ref:
        assert ref.key == KEY and ref.topk == 10
        back = list(ref.turns())
        assert ref.complete
    assert back == turns


def test_a_writer_killed_mid_turn_leaves_the_finished_turns(tmp_path):
    path = tmp_path / "ref.jsonl"
    turns = make_turns()
    w = ReferenceWriter(path, KEY, {})
    for t in turns:
        w.add(t)
    w._f.close()                                           # no footer: killed
    data = path.read_bytes()
    path.write_bytes(data[:-40])                           # and its last line cut short
    with Reference(path) as ref:
        assert list(ref.turns()) == turns[:2]
        assert not ref.complete


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_a_run_with_another_key_is_refused_naming_the_field(tmp_path, field):
    path = tmp_path / "ref.jsonl"
    ReferenceWriter(path, KEY, {}).close()
    other = dict(KEY, **{field: "something else"})
    with Reference(path) as ref:
        ref.check_key(dict(KEY))
        with pytest.raises(BadInput, match=field) as info:
            ref.check_key(other)
    assert "soak reference" in info.value.hint


def test_damaged_and_foreign_files_are_bad_input(tmp_path):
    foreign = tmp_path / "events.jsonl"
    foreign.write_text('{"event": "run_start"}\n')
    with pytest.raises(BadInput, match="not a soak reference"):
        Reference(foreign)
    with pytest.raises(BadInput, match="cannot read"):
        Reference(tmp_path / "missing.jsonl")
    path = tmp_path / "ref.jsonl"
    with ReferenceWriter(path, KEY, {}) as w:
        w.add(make_turns(1)[0])
    lines = path.read_text().splitlines(keepends=True)
    turn = json.loads(lines[1])
    turn["steps"] = turn["steps"][:-8]                     # not whole records
    path.write_text(lines[0] + json.dumps(turn) + "\n" + lines[2])
    with Reference(path) as ref, pytest.raises(BadInput, match=r"ref.jsonl:2: damaged"):
        list(ref.turns())
    head = json.loads(lines[0])
    head["version"] = 99
    path.write_text(json.dumps(head) + "\n")
    with pytest.raises(BadInput, match="version 99"):
        Reference(path)

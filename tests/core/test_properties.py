"""Hypothesis properties: the workload generator and the event log."""

import json

from hypothesis import example, given, settings, strategies as st

from soak.events import EventLog
from soak.run_folder import read_events, sanitize
from soak.worker import protocol
from soak.loop.workload import CLASSES, WorkloadSpec, conversation

seeds = st.integers(min_value=0, max_value=2**31)


@given(seeds, st.integers(min_value=0, max_value=10_000))
@settings(max_examples=40)
def test_workload_is_reproducible(seed, index):
    spec = WorkloadSpec(seed=seed)
    assert conversation(spec, index) == conversation(spec, index)


@given(seeds)
@settings(max_examples=25)
def test_prompts_are_valid_text_within_context(seed):
    spec = WorkloadSpec(seed=seed, context_tokens=512, max_new_tokens=32, max_turns=3)
    for index in range(5):
        conv = conversation(spec, index)
        assert 1 <= len(conv.turns) <= 3
        for turn in conv.turns:
            turn.prompt.encode("utf-8")  # never a lone surrogate
            assert len(turn.prompt) <= spec.max_chars
            assert 0 <= turn.max_new_tokens <= 32
            assert set(turn.classes) <= set(CLASSES)


def test_workload_covers_every_class():
    seen = set()
    for index in range(300):
        for turn in conversation(WorkloadSpec(seed=3), index).turns:
            seen.update(turn.classes)
    assert seen == set(CLASSES)


def test_multi_turn_conversations_exist():
    turns = [len(conversation(WorkloadSpec(seed=1, max_turns=4), i).turns) for i in range(100)]
    assert max(turns) == 4 and min(turns) == 1


def test_different_seeds_differ():
    a = [conversation(WorkloadSpec(seed=1), i) for i in range(10)]
    b = [conversation(WorkloadSpec(seed=2), i) for i in range(10)]
    assert a != b


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**53, max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
field_names = st.text(min_size=1, max_size=10).filter(lambda k: k not in ("event", "seq", "t", "ts", "run_id"))


@given(st.lists(st.tuples(st.sampled_from(["iteration", "fault", "memory"]),
                          st.dictionaries(field_names, json_values, max_size=5)), max_size=12))
@settings(max_examples=60)
@example(batch=[("iteration", {"i": []})])  # a field the reader types, of the wrong type: dropped
def test_event_log_round_trips(tmp_path_factory, batch):
    path = tmp_path_factory.mktemp("ev") / "events.jsonl"
    log = EventLog(path, "rid")
    for name, fields in batch:
        log.emit(name, **fields)
    log.close()
    back = list(read_events(path))
    assert len(back) == len(batch)
    for (name, fields), ev in zip(batch, back):
        assert ev["event"] == name and ev["run_id"] == "rid"
        want = {"event": name, **json.loads(json.dumps(fields))}
        sanitize(want)  # what the reader drops: a field of the wrong type (an iteration's `i` as a list)
        assert {k: ev.get(k, KeyError) for k in want} == want
    assert [e["seq"] for e in back] == list(range(len(batch)))


@given(st.lists(st.text(), min_size=1, max_size=5), st.integers(min_value=1, max_value=200))
@settings(max_examples=100)
@example(["\x81"], 116)  # the kill cut a two-byte UTF-8 character in half
def test_truncated_last_event_is_dropped(tmp_path_factory, texts, cut):
    path = tmp_path_factory.mktemp("ev") / "events.jsonl"
    log = EventLog(path, "rid")
    for t in texts:
        log.emit("iteration", prompt=t)
    log.close()
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut_at = last_start + min(cut, len(data) - last_start - 2)
    path.write_bytes(data[:max(last_start, cut_at)])
    back = list(read_events(path))
    assert [e["prompt"] for e in back] == texts[:len(back)] and len(back) >= len(texts) - 1


@given(st.sampled_from(protocol.OPS), st.integers(min_value=0, max_value=2**31),
       st.binary(max_size=300), st.integers(min_value=-1, max_value=4096))
def test_protocol_commands_round_trip(op, cmd_id, payload, n):
    line = protocol.encode_command(op, cmd_id, n, payload)
    assert line.count(b"\n") == 1 and line.isascii()
    parsed_op, parsed_id, args = protocol.parse_command(line)
    assert (parsed_op, parsed_id, int(args[0]), protocol.payload(args[1])) == (op, cmd_id, n, payload)


def test_payload_never_overwrites_the_envelope(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", "rid")
    log.emit("cl_start", seq=0, run_id="other", t=-1, ts="x")
    log.emit("cl_start", seq=0)
    log.close()
    first, second = read_events(tmp_path)
    assert (first["seq"], second["seq"]) == (0, 1) and first["run_id"] == "rid"
    assert first["seq_"] == 0 and first["run_id_"] == "other" and first["event"] == "cl_start"


def test_workload_does_not_depend_on_what_else_is_imported():
    """Same seed, same prompts, in fresh processes with different modules loaded."""
    import subprocess
    import sys

    code = ("import sys, json{extra}; from soak.loop.workload import conversation, WorkloadSpec; "
            "print(json.dumps([[t.prompt for t in conversation(WorkloadSpec(seed=11), i).turns] for i in range(40)]))")
    plain = subprocess.run([sys.executable, "-c", code.format(extra="")], capture_output=True, text=True, check=True)
    loaded = subprocess.run([sys.executable, "-c", code.format(
        extra=", soak.catalog.classify, soak.loop.runner, soak.analysis.verdicts, email, http.client")],
        capture_output=True, text=True, check=True)
    assert plain.stdout == loaded.stdout and len(plain.stdout) > 100

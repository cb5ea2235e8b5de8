"""Fast reading of events.jsonl for the classifier.

A 1,000,000-event run must classify in seconds, so the scan avoids decoding
what it does not need:
- each line comes with its event type (soak.run_folder.reduce_lines); unused types are skipped;
- `iteration` events (most of a run) give up only a few scalar fields,
  found with bytes.find instead of decoding the prompt and output (memory
  events are the memory verdict's, read by soak.analysis);
- a `fault` event that repeats one seen before (same fields apart from seq,
  t, ts, iteration, offset, count) is not decoded again.
A top-level key can't be confused with text inside a string value: every
quote inside a JSON string is escaped.  Lines not in json.dumps' default
layout fall back to json.loads.
"""

from __future__ import annotations

import re

# fields that differ between repeats of one fault (values never hold a quote)
VOLATILE_RE = re.compile(rb'"(?:seq|t|ts|run_id|iteration|offset|count|call_seq|t_ns|call_index|first_seq|last_seq)": (?:"[^"\\]*"|[-0-9.eE+]+|null)(?:, )?')


def iteration_fields(raw: bytes) -> dict | None:
    """i, turn, context_tokens, decode_tps, ok, and whether cl_errors and
    failures are empty.  Inline finds: this runs once per iteration."""
    f = raw.find
    try:
        j = f(b'"i": ')
        if j < 0:
            return None
        j += 5
        ev = {"i": int(raw[j:f(b",", j)])}
        j = f(b'"turn": ')
        if j >= 0:
            j += 8
            ev["turn"] = int(raw[j:f(b",", j)])
        j = f(b'"context_tokens": ')
        if j >= 0:
            j += 18
            ev["context_tokens"] = int(raw[j:f(b",", j)])
        j = f(b'"decode_tps": ')
        if j >= 0:
            j += 14
            ev["decode_tps"] = float(raw[j:f(b",", j)])
    except ValueError:  # null, or not json.dumps' layout: the caller decodes the line
        return None
    ev["ok"] = f(b'"ok": false') < 0
    ev["cl_errors"] = [] if f(b'"cl_errors": []') >= 0 else [True]
    ev["failures"] = [] if f(b'"failures": []') >= 0 else [True]
    return ev


def split_volatile(raw: bytes, call: bool = False) -> tuple[bytes, dict]:
    """(identity, {seq, iteration, count}) of a fault line: the identity is
    the line without the fields that differ between repeats."""
    fast = _split_eventlog(raw, _CALL_VOLATILE if call else _FAULT_VOLATILE)
    if fast is not None:
        return fast
    ident = VOLATILE_RE.sub(b"", raw)
    f = raw.find
    vol: dict = {}
    for name, needle, n in _VOLATILE_INTS:
        j = f(needle)
        if j >= 0:
            j += n
            k, e = f(b",", j), f(b"}", j)  # the last key ends at "}"
            try:
                vol[name] = int(raw[j:e if k < 0 or 0 <= e < k else k])
            except ValueError:  # null
                pass
    return ident, vol


_VOLATILE_INTS = tuple((name, b'"' + name.encode() + b'": ', len(name) + 4) for name in ("seq", "iteration", "count", "offset", "call_seq"))
_RUN_ID = b'"run_id": "'


def _split_eventlog(raw: bytes, volatile) -> tuple[bytes, dict] | None:
    """split_volatile for soak's EventLog layout, `{"event": .., "seq": N, "t":
    .., "ts": "..", "run_id": "..", <payload>}`: cut the envelope, then the
    payload's iteration/count/offset/call_seq.  None for any other layout."""
    if not raw.startswith(b'{"event": "'):
        return None
    j = raw.find(_RUN_ID)
    if j < 0:
        return None
    k = raw.find(b'", ', j + 11)
    if k < 0 or raw.find(b"\\", j + 11, k) >= 0:
        return None
    s = raw.find(b'"seq": ', 0, j)
    if s < 0:
        return None
    try:
        vol = {"seq": int(raw[s + 7:raw.find(b",", s)])}
    except ValueError:
        return None
    rest = raw[k + 3:]
    for name, needle in volatile:
        i = rest.find(needle)
        if i < 0:
            continue
        c = rest.find(b", ", i)
        end = rest.find(b"}", i) if c < 0 else c
        value = rest[i + len(needle):end]
        rest = rest[:i] + rest[c + 2:] if c >= 0 else rest[:i].rstrip(b", ") + rest[end:]
        if name is not None and value != b"null":
            try:
                vol[name] = int(value)
            except ValueError:
                return None
    return raw[:raw.find(b'"', 11) + 1] + rest, vol  # keep the event type in the identity


# payload fields that differ between repeats: of a `fault`, and of an interposer `cl_call_error`
_FAULT_VOLATILE = (("iteration", b'"iteration": '), ("count", b'"count": '), ("offset", b'"offset": '))
_CALL_VOLATILE = (("iteration", b'"iteration": '), ("count", b'"count": '), ("call_seq", b'"call_seq": '),
                  (None, b'"t_ns": '), (None, b'"call_index": '), ("first_seq", b'"first_seq": '),
                  (None, b'"last_seq": '))



"""The reference file: what the oracle engine produced, turn by turn, step by step.

JSON lines, streamed and flushed per turn (a killed `soak reference` leaves every finished turn usable):

    {"format": "soak-reference", "version": 1, "key": {...}, "oracle": {...}, "topk": K}
    {"turn": {"conv": 0, "turn": 0, "iteration": 0}, "input_ids": B64, "steps": B64, "n": N, "end": "stop"}
    ...
    {"done": true, "turns": T, "steps": S}

- `key` says what the reference is valid for: the model's hash, the workload seed and shape, soak's
  version.  A soak with another key is refused (`check_key`), naming the field and the fix.
- `input_ids`: the exact ids the oracle fed at the turn's start (chat template and history delta
  included), little-endian int32.
- `steps`: per generated step, `token` (int32, the id the oracle generated: the one fed next),
  `lse` (float32, the log-sum-exp of its logits), then K x (`id` int32, `logprob` float32), highest
  first.  8 + 8K bytes a step: 88 at K = 10, 118 once base64'd.

An unterminated last line (a writer killed mid-line) is dropped; any other unreadable line is bad input.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from soak.errors import BadInput
from soak.oracle.native import MAX_K, RefStep

FORMAT = "soak-reference"
VERSION = 1
DEFAULT_TOPK = 10
KEY_FIELDS = ("model_sha256", "seed", "workload", "soak_version")


@dataclass(frozen=True)
class RefTurn:
    conv: int
    turn: int
    iteration: int
    input_ids: tuple[int, ...]
    steps: tuple[RefStep, ...]
    end: str                    # "stop" (the oracle generated an end token) or "length" (max_new_tokens)

    @property
    def tokens(self) -> tuple[int, ...]:
        return tuple(s.token for s in self.steps)


def pack_ids(ids) -> str:
    return base64.b64encode(struct.pack(f"<{len(ids)}i", *ids)).decode()


def unpack_ids(text: str) -> tuple[int, ...]:
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4:
        raise ValueError("id list is not a whole number of int32")
    return struct.unpack(f"<{len(raw) // 4}i", raw)


def pack_steps(steps: list[RefStep], k: int) -> str:
    out = bytearray()
    for s in steps:
        if len(s.ids) != k:
            raise ValueError(f"step has {len(s.ids)} ids, the reference keeps {k}")
        out += struct.pack("<if", s.token, s.lse)
        out += b"".join(struct.pack("<if", i, lp) for i, lp in zip(s.ids, s.logprobs))
    return base64.b64encode(bytes(out)).decode()


def unpack_steps(text: str, k: int) -> tuple[RefStep, ...]:
    raw = base64.b64decode(text, validate=True)
    size = 8 + 8 * k
    if len(raw) % size:
        raise ValueError(f"steps are not a whole number of {size}-byte records")
    steps = []
    for off in range(0, len(raw), size):
        token, lse = struct.unpack_from("<if", raw, off)
        pairs = struct.unpack_from(f"<{'if' * k}", raw, off + 8)
        steps.append(RefStep(tuple(pairs[0::2]), tuple(pairs[1::2]), lse, token))
    return tuple(steps)


class ReferenceWriter:
    """Streams a reference: header at open, one line per turn (flushed), the footer at close."""

    def __init__(self, path: str | Path, key: dict, oracle: dict, topk: int = DEFAULT_TOPK):
        if not 1 <= topk <= MAX_K:
            raise BadInput(f"--oracle-topk {topk} is out of range", f"use 1..{MAX_K}")
        missing = [f for f in KEY_FIELDS if f not in key]
        if missing:
            raise ValueError(f"reference key lacks {missing}")
        self.path = Path(path)
        self.topk = topk
        self.turns = self.steps = 0
        try:
            self._f = open(self.path, "w", encoding="ascii")
        except OSError as e:
            raise BadInput(f"cannot write the reference {self.path}: {e.strerror}",
                           "choose a writable path with -o") from None
        self._line({"format": FORMAT, "version": VERSION, "key": key, "oracle": oracle, "topk": topk})

    def _line(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
        self._f.flush()

    def add(self, turn: RefTurn) -> int:
        """Write one turn; returns the bytes its line took."""
        line = {"turn": {"conv": turn.conv, "turn": turn.turn, "iteration": turn.iteration},
                "input_ids": pack_ids(turn.input_ids), "steps": pack_steps(list(turn.steps), self.topk),
                "n": len(turn.steps), "end": turn.end}
        self._line(line)
        self.turns += 1
        self.steps += len(turn.steps)
        return len(json.dumps(line, separators=(",", ":"))) + 1

    def close(self) -> None:
        if self._f.closed:
            return
        self._line({"done": True, "turns": self.turns, "steps": self.steps})
        os.fsync(self._f.fileno())
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Reference:
    """A reference opened for reading: the header at once, the turns streamed in file order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._f = open(self.path, "rb")
        except OSError as e:
            raise BadInput(f"cannot read the reference {self.path}: {e.strerror}",
                           "make one with `soak reference` and pass its path to --reference") from None
        first = self._f.readline()
        try:
            head = json.loads(first)
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise BadInput(f"{self.path} is not a soak reference (its first line is no reference header)",
                           "make one with `soak reference`")
        if head.get("version") != VERSION:
            raise BadInput(f"{self.path}: reference format version {head.get('version')!r}, this soak reads {VERSION}",
                           "make the reference again with this soak (`soak reference`)")
        topk = head.get("topk")
        if not isinstance(topk, int) or not 1 <= topk <= MAX_K or not isinstance(head.get("key"), dict):
            raise BadInput(f"{self.path}: damaged reference header (topk, key)", "make the reference again")
        self.key: dict = head["key"]
        self.oracle: dict = head.get("oracle") or {}
        self.topk: int = topk
        self.complete = False          # the footer was read
        self._line_no = 1

    def check_key(self, key: dict) -> None:
        """Refuse a soak whose model, workload or soak version differ from the reference's."""
        for field in KEY_FIELDS:
            if self.key.get(field) != key.get(field):
                raise BadInput(f"the reference {self.path} was made for {field} = {self.key.get(field)!r}, "
                               f"this run has {key.get(field)!r}",
                               "make a reference for this model and workload: `soak reference` with the same "
                               "--model, --seed and workload options")

    def turns(self) -> Iterator[RefTurn]:
        for raw in self._f:
            self._line_no += 1
            if not raw.endswith(b"\n"):
                return                              # a writer killed mid-line: everything before stays usable
            try:
                obj = json.loads(raw)
                if obj.get("done"):
                    self.complete = True
                    return
                t = obj["turn"]
                steps = unpack_steps(obj["steps"], self.topk)
                if len(steps) != obj["n"]:
                    raise ValueError("step count differs from n")
                yield RefTurn(int(t["conv"]), int(t["turn"]), int(t["iteration"]), unpack_ids(obj["input_ids"]),
                              steps, str(obj.get("end", "length")))
            except (ValueError, KeyError, TypeError, AttributeError, struct.error) as e:
                raise BadInput(f"{self.path}:{self._line_no}: damaged reference line ({e})",
                               "make the reference again with `soak reference`") from None

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

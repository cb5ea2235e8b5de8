"""The loop's side of the wrong-answer oracle: which turns are teacher-forced, against which reference
turn, and what a checked turn records.  (soak.oracle does the comparison; the worker runs it.)

Two modes:
- `make` (`soak reference`): every turn runs greedily on the oracle engine through the `reference`
  worker command; each turn is appended to the run folder's reference.jsonl.
- `check` (`soak run --reference`): one conversation in `every` is teacher-forced, all its turns, so the
  history the engine holds is the reference's (a free turn would change it); other conversations run
  free as always.  A turn the reference lacks (it was made with fewer iterations, or its conversation
  broke there) runs free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from soak import __version__, errors
from soak.oracle import wire
from soak.oracle.judge import THRESHOLDS, Thresholds, comparison_class, judge_turn
from soak.oracle.reference import DEFAULT_TOPK, Reference, ReferenceWriter, RefTurn
from soak.run_folder import REFERENCE, is_run_folder


@dataclass
class OracleConfig:
    reference: str | None = None     # check against this reference (a file, or a `soak reference` run folder)
    every: int = 1                   # teacher-force one conversation in `every`
    make: bool = False               # write a reference instead (soak reference)
    topk: int = DEFAULT_TOPK         # make: the ids kept per step


def validate(cfg: OracleConfig) -> None:
    if cfg.make and cfg.reference:
        raise errors.BadInput("a run cannot both make a reference and check against one",
                              "use `soak reference` to make one, then `soak run --reference`")
    if not isinstance(cfg.every, int) or cfg.every < 1:
        raise errors.BadInput(f"--oracle-every {cfg.every!r} must be a whole number >= 1",
                              "1 checks every conversation; N checks one in N")
    if not isinstance(cfg.topk, int) or not 1 <= cfg.topk <= 64:
        raise errors.BadInput(f"--oracle-topk {cfg.topk!r} is out of range", "use 1..64 (default 10)")


def reference_path(given: str) -> Path:
    """A reference file, or the run folder `soak reference` wrote it in."""
    path = Path(given).expanduser()
    if path.is_dir():
        if not is_run_folder(path) or not (path / REFERENCE).is_file():
            raise errors.BadInput(f"--reference {given}: no {REFERENCE} in this folder",
                                  "pass the run folder `soak reference` wrote, or its reference file")
        return path / REFERENCE
    return path


def run_key(manifest: dict, cfg) -> dict:
    """What a reference is valid for: the model's files, the workload, soak's version."""
    model = manifest.get("model") or {}
    files = model.get("sha256") or {}
    if not files and cfg.engine == "test":        # the test engine's model is its config and its library
        files = {"test_engine": {k: cfg.test_engine.get(k) for k in ("seed", "vocab_size")},
                 "library": manifest.get("libraries")}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    workload = {"max_new_tokens": cfg.max_new_tokens, "max_turns": cfg.max_turns,
                "context_tokens": cfg.context_tokens, "script": cfg.script is not None}
    return {"model_sha256": digest, "seed": cfg.seed, "workload": workload, "soak_version": __version__}


def candidate_of(cfg) -> dict:
    return {"engine": cfg.engine, "backend": cfg.backend, "precision": (cfg.engine_options or {}).get("precision")}


class OracleTurns:
    def __init__(self, ocfg: OracleConfig, run_dir: Path, key: dict, candidate: dict, lib_path: str):
        self.cfg = ocfg
        self.lib = lib_path
        self.key = key
        self.candidate = candidate
        self.checked = self.wrong = self.nonfinite = 0
        self._writer: ReferenceWriter | None = None
        self._ref: Reference | None = None
        self._turns = None
        self._next: RefTurn | None = None
        self.thresholds: Thresholds | None = None
        if ocfg.make:
            self._writer = ReferenceWriter(run_dir / REFERENCE, key, candidate, ocfg.topk)
        else:
            self._ref = Reference(reference_path(ocfg.reference))
            self._ref.check_key(key)
            self.thresholds = THRESHOLDS[comparison_class(candidate, self._ref.oracle)]
            self._turns = self._ref.turns()
            self._next = next(self._turns, None)

    @property
    def mode(self) -> str:
        return "make" if self.cfg.make else "check"

    def manifest(self) -> dict:
        info = {"mode": self.mode, "key": self.key, "candidate": self.candidate}
        if self._ref is not None:
            info.update(reference=str(self._ref.path), oracle=self._ref.oracle, topk=self._ref.topk,
                        every=self.cfg.every, thresholds=self.thresholds.as_dict())
        else:
            info.update(topk=self.cfg.topk)
        return info

    # -- check ---------------------------------------------------------------
    def turn_for(self, conv: int, turn: int) -> RefTurn | None:
        """The reference turn to teacher-force at (conv, turn), or None: this turn runs free."""
        if self._ref is None or conv % self.cfg.every:
            return None
        while self._next is not None and (self._next.conv, self._next.turn) < (conv, turn):
            self._next = next(self._turns, None)
        if self._next is not None and (self._next.conv, self._next.turn) == (conv, turn):
            return self._next
        return None

    def check_request(self, ref: RefTurn) -> dict:
        t = self.thresholds
        return wire.check_request(ref, self._ref.topk, (t.abs_max, t.kl_max), self.lib)

    def judge(self, summary: dict) -> list[dict]:
        found = judge_turn(summary, self.thresholds)
        self.checked += 1
        self.wrong += any(f["kind"] == "wrong_output" for f in found)
        self.nonfinite += any(f["kind"] == "nonfinite_logits" for f in found)
        return found

    # -- make ----------------------------------------------------------------
    def reference_request(self, prompt: bytes, max_new: int) -> dict:
        return wire.reference_request(prompt, max_new, self.cfg.topk, self.lib)

    def keep(self, result: dict, where: tuple[int, int, int]) -> None:
        self._writer.add(wire.turn_from_result(result, self.cfg.topk, where))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._ref is not None:
            self._ref.close()

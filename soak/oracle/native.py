"""ctypes binding of native/oracle (libsoak_oracle.so): a reference step's top-k and the step metrics.

The candidate's logits are compared where they were computed (in the worker); only `StepMetrics` leave.
"""

from __future__ import annotations

import ctypes
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from soak.errors import BuildFailed

ORACLE_VERSION = 1     # native/oracle/soak_oracle.h SOAK_ORACLE_VERSION
MAX_K = 64             # SOAK_ORACLE_MAX_K
_OK, _BAD_ARGS, _NONFINITE = 0, -1, -2


class _Metrics(ctypes.Structure):
    _fields_ = [("argmax", ctypes.c_int32), ("agree", ctypes.c_int32), ("ref_rank", ctypes.c_int32),
                ("nonfinite", ctypes.c_int32), ("kl", ctypes.c_double), ("nmse", ctypes.c_double),
                ("max_abs", ctypes.c_double), ("ref_logprob", ctypes.c_double), ("margin", ctypes.c_double)]


@dataclass(frozen=True)
class RefStep:
    """One step of the reference: the oracle's top-k ids and log-probabilities (highest first), its
    log-sum-exp (float32 values, as the reference file keeps them), and the token it generated."""
    ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    lse: float
    token: int


@dataclass(frozen=True)
class StepMetrics:
    argmax: int
    agree: bool
    ref_rank: int
    nonfinite: int
    kl: float
    nmse: float
    max_abs: float
    ref_logprob: float
    margin: float

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0 and math.isfinite(self.kl)


class OracleLib:
    """The loaded library.  `logits` arguments are a float32 buffer (array('f'), numpy, a ctypes
    array) or an (address, n) pair for memory the engine owns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        lib = ctypes.CDLL(str(self.path))
        if lib.soak_oracle_version() != ORACLE_VERSION:
            raise BuildFailed(f"{self.path}: oracle version {lib.soak_oracle_version()}, soak needs {ORACLE_VERSION}",
                              "remove soak's native cache (~/.cache/soak/native) so it is rebuilt")
        f32p, i32p = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32)
        lib.soak_oracle_topk.argtypes = [f32p, ctypes.c_int32, ctypes.c_int32, i32p, f32p,
                                         ctypes.POINTER(ctypes.c_double)]
        lib.soak_oracle_topk.restype = ctypes.c_int
        lib.soak_oracle_compare.argtypes = [f32p, ctypes.c_int32, ctypes.c_int32, i32p, f32p, ctypes.c_int32,
                                            ctypes.POINTER(_Metrics)]
        lib.soak_oracle_compare.restype = ctypes.c_int
        self._lib = lib

    @staticmethod
    def _pointer(logits) -> tuple[ctypes.POINTER(ctypes.c_float), int, object]:
        """(pointer, n, keep-alive) for a float32 buffer or an (address, n) pair."""
        if isinstance(logits, tuple):
            address, n = logits
            return ctypes.cast(ctypes.c_void_p(address), ctypes.POINTER(ctypes.c_float)), int(n), None
        view = memoryview(logits)
        if view.format not in ("f", "<f", "=f") or view.itemsize != 4:
            raise ValueError(f"logits must be float32, got format {view.format!r}")
        n = view.nbytes // 4
        try:
            arr = (ctypes.c_float * n).from_buffer(view)
        except TypeError:                     # read-only: copy once
            arr = (ctypes.c_float * n).from_buffer_copy(view)
        return ctypes.cast(arr, ctypes.POINTER(ctypes.c_float)), n, arr

    def topk(self, logits, k: int, token: int | None = None) -> RefStep:
        """The reference step for these (finite) logits; `token` defaults to the argmax."""
        ptr, n, _keep = self._pointer(logits)
        ids, lps, lse = (ctypes.c_int32 * k)(), (ctypes.c_float * k)(), ctypes.c_double()
        rc = self._lib.soak_oracle_topk(ptr, n, k, ids, lps, ctypes.byref(lse))
        if rc == _NONFINITE:
            raise ValueError("the oracle's logits are not finite (NaN or +inf): no reference can be made from them")
        if rc != _OK:
            raise ValueError(f"bad top-k arguments: n={n}, k={k} (k must be 1..{min(MAX_K, n)})")
        lse32 = struct.unpack("<f", struct.pack("<f", lse.value))[0]    # kept as float32, as the file keeps it
        return RefStep(tuple(ids), tuple(float(v) for v in lps), lse32,
                       int(ids[0]) if token is None else int(token))

    def compare(self, logits, ref: RefStep) -> StepMetrics:
        ptr, n, _keep = self._pointer(logits)
        k = len(ref.ids)
        m = _Metrics()
        rc = self._lib.soak_oracle_compare(ptr, n, k, (ctypes.c_int32 * k)(*ref.ids),
                                           (ctypes.c_float * k)(*ref.logprobs), ref.token, ctypes.byref(m))
        if rc != _OK:
            raise ValueError(f"reference step does not fit these logits: vocabulary {n}, k={k}, "
                             f"token {ref.token}, ids up to {max(ref.ids)}")
        return StepMetrics(m.argmax, bool(m.agree), m.ref_rank, m.nonfinite, m.kl, m.nmse, m.max_abs,
                           m.ref_logprob, m.margin)


_LOADED: OracleLib | None = None


def load() -> OracleLib:
    """Build (first use, cached) and load native/oracle."""
    global _LOADED
    if _LOADED is None:
        from soak.native_build import ensure_built
        _LOADED = OracleLib(ensure_built("soak_oracle"))
    return _LOADED

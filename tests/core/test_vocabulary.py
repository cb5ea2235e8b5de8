"""One vocabulary: the engine ABI (Python vs the C header) and the worker error kinds."""

import re
from pathlib import Path

import pytest

from soak import errors
from soak.engine import abi, loader
from soak.worker import protocol

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "native" / "include" / "soak_engine.h"
RUNNER = ROOT / "native" / "runner"


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def parse_header(text: str) -> dict:
    """The #defines, enum values and struct soak_perf fields of soak_engine.h."""
    text = _strip_comments(text)
    defines = {m.group(1): m.group(2).strip()
               for m in re.finditer(r"^\s*#define\s+(SOAK_\w+)[ \t]+([^\n]+)$", text, re.M)}
    enum = re.search(r"typedef\s+enum\s+soak_status\s*\{(.*?)\}", text, re.S)
    statuses = {}
    for item in enum.group(1).split(","):
        if item.strip():
            name, value = (part.strip() for part in item.split("="))
            statuses[name] = int(value)
    perf = re.search(r"typedef\s+struct\s+soak_perf\s*\{(.*?)\}", text, re.S)
    fields = [tuple(m.groups()[::-1]) for m in re.finditer(r"(\w+)\s+(\w+)\s*;", perf.group(1))]
    functions = re.findall(r"SOAK_EXPORT[^;(]*?\bsoak_engine_(\w+)\s*\(", text)
    return {"defines": defines, "statuses": statuses, "perf": fields, "functions": functions}


def python_side() -> dict:
    """What the header must say, derived from soak.engine.abi alone."""
    return {
        "statuses": {f"SOAK_STATUS_{name}": code for name, code in abi.STATUS.items()},
        "codes": {f"SOAK_{name}": code for name, code in abi.RETURN_CODES.items()},
        "version": abi.ABI_VERSION,
        "min_version": abi.ABI_MIN_VERSION,
        "perf": list(abi.PERF_FIELDS),
        "functions": list(abi.REQUIRED_FUNCTIONS + abi.ORACLE_FUNCTIONS),
    }


def compare(header: dict) -> list[str]:
    """Every difference, either way."""
    py = python_side()
    diffs = []
    if header["statuses"] != py["statuses"]:
        diffs.append(f"status enum: header {header['statuses']} != python {py['statuses']}")
    codes = {k: int(v) for k, v in header["defines"].items()
             if re.fullmatch(r"SOAK_(OK|ERR_\w+)", k) and re.fullmatch(r"-?\d+", v)}
    if codes != py["codes"]:
        diffs.append(f"return codes: header {codes} != python {py['codes']}")
    version = header["defines"].get("SOAK_ENGINE_ABI_VERSION", "").rstrip("uU")
    if version != str(py["version"]):
        diffs.append(f"ABI version: header {version!r} != python {py['version']}")
    minimum = header["defines"].get("SOAK_ENGINE_ABI_MIN_VERSION", "").rstrip("uU")
    if minimum != str(py["min_version"]):
        diffs.append(f"ABI min version: header {minimum!r} != python {py['min_version']}")
    if header["perf"] != py["perf"]:
        diffs.append(f"soak_perf: header {header['perf']} != python {py['perf']}")
    if header["functions"] != py["functions"]:
        diffs.append(f"functions: header {header['functions']} != python {py['functions']}")
    return diffs


def test_python_abi_matches_the_c_header():
    assert compare(parse_header(HEADER.read_text())) == []


@pytest.mark.parametrize("edit", [
    ("SOAK_STATUS_TIMEOUT = 5", "SOAK_STATUS_TIMEOUT = 6"),                       # a value changes
    ("SOAK_STATUS_TIMEOUT = 5\n", "SOAK_STATUS_TIMEOUT = 5,\n    SOAK_STATUS_NEW = 7\n"),  # C gains one
    ("    SOAK_STATUS_USER_CANCEL = 3,\n", ""),                                    # C loses one
    ("#define SOAK_ERR_ENGINE -3", "#define SOAK_ERR_ENGINE -4"),
    ("#define SOAK_ERR_ENGINE -3", "#define SOAK_ERR_ENGINE -3\n#define SOAK_ERR_BUSY -4"),
    ("#define SOAK_ENGINE_ABI_VERSION 2u", "#define SOAK_ENGINE_ABI_VERSION 3u"),
    ("#define SOAK_ENGINE_ABI_MIN_VERSION 1u", "#define SOAK_ENGINE_ABI_MIN_VERSION 2u"),
    ("SOAK_EXPORT int soak_engine_is_stop(", "SOAK_EXPORT int soak_engine_is_end("),          # renamed
    ("SOAK_EXPORT void soak_engine_destroy(soak_engine *e);",                                 # C gains one
     "SOAK_EXPORT void soak_engine_destroy(soak_engine *e);\nSOAK_EXPORT int soak_engine_vocab(soak_engine *e);"),
    ("    int64_t load_us;", "    int64_t load_us;\n    int64_t kv_bytes;"),
    ("int32_t prompt_tokens;", "int64_t prompt_tokens;"),
])
def test_a_header_change_alone_is_caught(edit):
    text = HEADER.read_text()
    assert edit[0] in text
    assert compare(parse_header(text.replace(edit[0], edit[1], 1))) != []


def test_a_python_change_alone_is_caught(monkeypatch):
    header = parse_header(HEADER.read_text())
    monkeypatch.setitem(abi.STATUS, "PAUSED", 6)
    assert compare(header) != []
    monkeypatch.delitem(abi.STATUS, "PAUSED")
    monkeypatch.setitem(abi.RETURN_CODES, "OK", 1)
    assert compare(header) != []
    monkeypatch.setitem(abi.RETURN_CODES, "OK", 0)
    monkeypatch.setattr(abi, "PERF_FIELDS", abi.PERF_FIELDS[:-1])
    assert compare(header) != []
    monkeypatch.undo()
    monkeypatch.setattr(abi, "ORACLE_FUNCTIONS", abi.ORACLE_FUNCTIONS[:-1])
    assert compare(header) != []


def test_ctypes_perf_struct_is_the_abi_one():
    assert [name for name, _ in loader.Perf._fields_] == list(abi.PERF_NAMES)
    assert loader.ABI_VERSION == abi.ABI_VERSION and loader.ABI_MIN_VERSION == abi.ABI_MIN_VERSION
    # every ABI function has its ctypes signature, required or optional
    assert list(loader.SIGNATURES) == [f"soak_engine_{n}" for n in abi.REQUIRED_FUNCTIONS]
    assert list(loader.ORACLE_SIGNATURES) == [f"soak_engine_{n}" for n in abi.ORACLE_FUNCTIONS]
    assert abi.ABI_MIN_VERSION < abi.ORACLE_SINCE <= abi.ABI_VERSION
    assert abi.STATUS_NAMES[abi.NOT_LOADED] == "NOT_LOADED"
    assert abi.ERROR_STATUSES.isdisjoint(abi.FINISHED_STATUSES)


def _runner_error_kinds() -> set[str]:
    """Every error_kind string native/runner can send."""
    kinds = set()
    for path in RUNNER.glob("*.c"):
        text = _strip_comments(path.read_text())
        kinds |= set(re.findall(r"ERR_\w+\s*=\s*\"(\w+)\"", text))
        kinds |= set(re.findall(r"fail\(r,\s*SOAK_\w+,\s*\"(\w+)\"", text))
        kinds |= set(re.findall(r"\bkind\s*=\s*\"(\w+)\"", text))
        kinds |= set(re.findall(r"\\\"error_kind\\\":\\\"(\w+)\\\"", text))
    return kinds


def test_runner_error_kinds_are_in_the_one_table():
    kinds = _runner_error_kinds()
    assert {"missing_library", "abi_mismatch", "load_failed", "bad_command", "create_failed"} <= kinds
    assert kinds <= set(protocol.WORKER_ERROR_KINDS), kinds - set(protocol.WORKER_ERROR_KINDS)


def test_python_worker_error_kinds_follow_the_table():
    assert protocol.worker_error_kind(errors.AbiMismatch("x"), "open") == "abi_mismatch"
    assert protocol.worker_error_kind(errors.BadInput("x"), "respond") == "bad_input"
    assert protocol.worker_error_kind(errors.EngineError("x"), "open") == "create_failed"
    assert protocol.worker_error_kind(errors.EngineError("x"), "respond") == "engine_error"
    assert protocol.worker_error_kind(errors.BuildFailed("x"), "open") == "engine_error"
    raised = {k.error for k in protocol.WORKER_ERROR_KINDS.values() if k.error}
    assert all(issubclass(cls, errors.SoakError) and cls.exit_code > 1 for cls in raised)
    assert {k.rc for k in protocol.WORKER_ERROR_KINDS.values()} <= set(abi.RETURN_CODES.values()) - {abi.OK}

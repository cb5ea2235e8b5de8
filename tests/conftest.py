"""Shared test settings.  Area-specific fixtures live in tests/<area>/conftest.py.

Unit and integration tests (README, "Tests"): every test is marked `unit` or `integration` here.
A unit test starts no process, builds no native code and loads no engine:
`python3 -m pytest -m unit` runs them alone, in under a minute.  A test is a unit test when its
file is in UNIT_FILES, unless it uses a fixture of ENGINE_FIXTURES, is listed in INTEGRATION, or
is marked `integration` or `slow` in its file.  Everything else, new files included, is
integration.  A unit test that starts a process or loads a native library fails, saying so
(an audit hook watches), so the fast set stays fast as tests are added.
"""

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=100)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parents[1]
# The workplace's prebuilt MNN (a tool beside the project, like a compiler; never copied into it).
SHARED_MNN = REPO.parent / "shared" / "mnn"


def _unpack_shared_mnn(tarball: Path) -> Path:
    """Unpack the prebuilt MNN once per tarball content, outside the checkout, atomically."""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()[:16]
    base = Path(os.environ.get("SOAK_CACHE_DIR")
                or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "soak") / "mnn-prebuilt"
    dest = base / digest
    if not (dest / "build" / "libllm.so").is_file():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=base))
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="tar")
        try:
            tmp.rename(dest)
        except OSError:           # another test process unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def pytest_configure(config):
    """Point the mnn_native tests at ../shared/mnn's prebuilt MNN when none is named.

    They skip only where no MNN exists at all: SOAK_MNN_BUILD unset and no prebuilt tarball beside
    the checkout.  Runs before collection, so the tests' skipif conditions see the variables.
    """
    if os.environ.get("SOAK_MNN_BUILD"):
        return
    tarballs = sorted(SHARED_MNN.glob("mnn-*-linux-x86_64.tgz")) if SHARED_MNN.is_dir() else []
    if not tarballs or os.uname().machine != "x86_64":
        return
    root = _unpack_shared_mnn(tarballs[-1])
    os.environ["SOAK_MNN_BUILD"] = str(root / "build")
    os.environ.setdefault("SOAK_MNN_SOURCE", str(root / "prefix"))


# Test files whose tests are unit tests (but for the exceptions above), one a line, sorted.
UNIT_FILES = {
    "tests/adb/test_adb_parsers.py",
    "tests/catalog/test_catalog_schema.py",
    "tests/catalog/test_causal.py",
    "tests/catalog/test_classify_cli.py",
    "tests/catalog/test_end_to_end.py",
    "tests/catalog/test_eventread.py",
    "tests/catalog/test_match_keys.py",
    "tests/catalog/test_memory_kept.py",
    "tests/catalog/test_memory_one_judge.py",
    "tests/catalog/test_rawlog.py",
    "tests/catalog/test_real_corpus.py",
    "tests/catalog/test_real_logs.py",
    "tests/catalog/test_report_witnesses.py",
    "tests/catalog/test_scan_bounded.py",
    "tests/catalog/test_signatures.py",
    "tests/core/test_architecture_doc.py",
    "tests/core/test_diagnostics.py",
    "tests/core/test_engine_setup.py",
    "tests/core/test_fault_kinds.py",
    "tests/core/test_hypothesis_compat.py",
    "tests/core/test_layers.py",
    "tests/core/test_logparse_checks.py",
    "tests/core/test_properties.py",
    "tests/core/test_reduce_lines.py",
    "tests/core/test_run_folder.py",
    "tests/core/test_stall_policy.py",
    "tests/core/test_stats.py",
    "tests/core/test_test_split.py",
    "tests/core/test_vocabulary.py",
    "tests/core/test_vocabulary_tables.py",
    "tests/core/test_wrong_types.py",
    "tests/oracle/test_judge.py",
    "tests/outputs/test_bundle.py",
    "tests/outputs/test_compare_sweep.py",
    "tests/outputs/test_end_reasons.py",
    "tests/outputs/test_gate.py",
    "tests/outputs/test_history.py",
    "tests/outputs/test_junit.py",
    "tests/outputs/test_merge.py",
    "tests/outputs/test_profile_analysis.py",
    "tests/outputs/test_replay_trust.py",
    "tests/outputs/test_report_markers.py",
    "tests/outputs/test_safe_tar.py",
    "tests/outputs/test_trend.py",
    "tests/outputs/test_verdicts.py",
    "tests/outputs/test_workload_verdicts.py",
}

# Fixtures that run soak on an engine, start a process or build native code (a test using one,
# directly or through another fixture, is an integration test).
ENGINE_FIXTURES = {
    "cl_build", "demo", "engine_runs", "lab", "mnn_run", "nights", "pip_mnn_stdout", "planned_run",
    "pytester", "run_workload", "soak_run", "sources",
}

# Tests of UNIT_FILES that start soak or build native code themselves ("file::test", no parameters).
INTEGRATION = {
    "tests/catalog/test_end_to_end.py::test_demo_run_every_fault_kind_classified",
    "tests/catalog/test_memory_one_judge.py::test_classify_gate_status_agree_on_random_series",  # hypothesis, whole judges
    "tests/core/test_engine_setup.py::test_engine_lib_setup_leaves_the_config_alone",
    "tests/core/test_properties.py::test_workload_does_not_depend_on_what_else_is_imported",
    "tests/outputs/test_compare_sweep.py::test_sweep_runs_and_tabulates",
    "tests/outputs/test_gate.py::test_soak_run_with_gate",
    "tests/outputs/test_history.py::test_bad_input",
    "tests/outputs/test_history.py::test_cli",
    "tests/outputs/test_history.py::test_stores_root_causes_not_their_cascade",
    "tests/outputs/test_merge.py::test_bad_input_is_exit_3_with_a_hint",
    "tests/outputs/test_profile_analysis.py::test_profile_command",
    "tests/outputs/test_profile_analysis.py::test_trace_command_and_trace_processor",
    "tests/core/test_wrong_types.py::test_bundle",  # 15 bundles, tarred and gzipped
    "tests/outputs/test_report_markers.py::test_dense_series_get_a_rolling_median_and_a_running_run_says_in_progress",  # an HTML report with charts
    "tests/core/test_wrong_types.py::test_report",  # the HTML report with its charts, 8 times
}


def _is_unit(item) -> bool:
    rel = Path(str(item.path)).resolve().relative_to(REPO).as_posix()
    return (rel in UNIT_FILES
            and item.get_closest_marker("integration") is None and item.get_closest_marker("slow") is None
            and not ENGINE_FIXTURES.intersection(item.fixturenames)
            and item.nodeid.split("[")[0] not in INTEGRATION)


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.unit if _is_unit(item) else pytest.mark.integration)


# -- the guard: a unit test that starts a process or loads a native library fails ----------------
# (os.fork alone is allowed: soak's own forked reduce of a big event log)
_SPAWNS = {"subprocess.Popen", "os.posix_spawn", "os.exec", "os.spawn", "os.system", "ctypes.dlopen"}
_started: list | None = None  # while a unit test runs: what it started


def _audit(event, args):
    if _started is not None and event in _SPAWNS:
        if event == "ctypes.dlopen" and args and args[0] is None:
            return  # dlopen(NULL): the running process's own symbols (ctypes itself, libc's free), no library
        _started.append(f"{event} {args[0] if args else ''}")


sys.addaudithook(_audit)


def pytest_sessionstart(session):
    """soak finds the C++ runtime's demangler once per process (ctypes.util.find_library runs
    ldconfig, then the library is loaded): done here, before any test, so a unit test that
    demangles a crash frame is not taken for one that starts a process."""
    try:
        from soak.elf_symbols import demangle
    except ImportError:
        return
    demangle("_Z1fv")


@pytest.fixture(autouse=True)
def _unit_tests_start_nothing(request):
    global _started
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    _started = []
    try:
        yield
    finally:
        started, _started = _started, None
    if started:
        pytest.fail(f"a unit test started {started[0]!r}: list it in INTEGRATION (tests/conftest.py), "
                    "mark it integration, or give it a fixture of ENGINE_FIXTURES", pytrace=False)

"""The native build cache is keyed by source content: a build folder configured from
another checkout (removed since, as a worktree or an old clone) must not break the
build of the same sources from here."""

from __future__ import annotations

import shutil
from pathlib import Path

from soak import native_build


def test_build_folder_configured_from_a_removed_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("SOAK_CACHE_DIR", str(tmp_path / "cache"))
    first = tmp_path / "checkout-a" / "native"
    shutil.copytree(native_build.NATIVE_DIR, first, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(native_build, "NATIVE_DIR", first)
    built = native_build.ensure_built("soak_test_engine")
    build = built.parent
    built.unlink()  # an interrupted build: configured, product missing
    shutil.rmtree(first.parent)
    second = tmp_path / "checkout-b" / "native"
    shutil.copytree(Path(native_build.__file__).resolve().parent.parent / "native", second,
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(native_build, "NATIVE_DIR", second)
    rebuilt = native_build.ensure_built("soak_test_engine")
    assert rebuilt.parent == build, "same sources, same cache folder"
    assert rebuilt.exists()
    assert native_build._configured_for(build) == (second / "test_engine").resolve()

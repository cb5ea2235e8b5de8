"""Shared test settings.  Area-specific fixtures live in tests/<area>/conftest.py."""

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

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

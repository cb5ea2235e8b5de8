"""Malicious tarballs are refused before anything is written."""

from __future__ import annotations

import io
import tarfile

import pytest

from soak.cli import main
from soak.errors import BadInput, ExitCode
from soak.outputs.safe_tar import safe_extract


def _tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


OK = _file("soak-bundle-x/README.md", b"hello")

CASES = {
    "dotdot": [OK, _file("soak-bundle-x/../../evil.txt")],
    "dotdot-top": [_file("../evil.txt")],
    "absolute": [_file("/tmp/soak-evil.txt")],
    "backslash": [_file("soak-bundle-x\\..\\evil.txt")],
    "symlink-out": [OK, _special("soak-bundle-x/link", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink-rel": [OK, _special("soak-bundle-x/link", tarfile.SYMTYPE, "../../etc")],
    "hardlink-out": [OK, _special("soak-bundle-x/hard", tarfile.LNKTYPE, "/etc/passwd")],
    "chardev": [OK, _special("soak-bundle-x/null", tarfile.CHRTYPE)],
    "blockdev": [OK, _special("soak-bundle-x/sda", tarfile.BLKTYPE)],
    "fifo": [OK, _special("soak-bundle-x/fifo", tarfile.FIFOTYPE)],
    "duplicate": [OK, _file("soak-bundle-x/README.md", b"second")],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused(tmp_path, case):
    bad = _tar(tmp_path / f"{case}.tar.gz", CASES[case])
    dest = tmp_path / "out"
    with pytest.raises(BadInput) as exc:
        safe_extract(bad, dest)
    assert "refusing" in str(exc.value)
    assert not dest.exists() or not any(dest.rglob("*")), "nothing may be written from a refused archive"
    assert not (tmp_path / "evil.txt").exists()


def test_huge_member_and_bomb_limits(tmp_path):
    big = _tar(tmp_path / "big.tar.gz", [_file("soak-bundle-x/zeros", b"\0" * 200_000)])
    with pytest.raises(BadInput, match="limit 100000"):
        safe_extract(big, tmp_path / "o1", max_member=100_000)
    many = _tar(tmp_path / "many.tar.gz", [_file(f"soak-bundle-x/f{i}") for i in range(50)])
    with pytest.raises(BadInput, match="members"):
        safe_extract(many, tmp_path / "o2", max_members=20)
    total = _tar(tmp_path / "total.tar.gz", [_file(f"soak-bundle-x/f{i}", b"\0" * 60_000) for i in range(5)])
    with pytest.raises(BadInput, match="add up"):
        safe_extract(total, tmp_path / "o3", max_total=200_000)


def test_damaged_archive_is_bad_input(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(BadInput, match="cannot read bundle"):
        safe_extract(junk, tmp_path / "o")
    with pytest.raises(BadInput, match="does not exist"):
        safe_extract(tmp_path / "missing.tar.gz", tmp_path / "o")


def test_good_archive_extracts_with_safe_modes(tmp_path):
    info, data = _file("soak-bundle-x/run.sh", b"#!/bin/sh\n")
    info.mode = 0o6777  # setuid/setgid/world-writable must not survive
    good = _tar(tmp_path / "good.tar.gz", [OK, (info, data)])
    names = safe_extract(good, tmp_path / "o")
    assert sorted(names) == ["soak-bundle-x/README.md", "soak-bundle-x/run.sh"]
    mode = (tmp_path / "o/soak-bundle-x/run.sh").stat().st_mode & 0o7777
    assert mode == 0o644


def test_replay_refuses_a_malicious_bundle(tmp_path, capsys):
    bad = _tar(tmp_path / "evil.tar.gz", CASES["symlink-out"])
    assert main(["replay", str(bad)]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "refusing to extract" in err and "Traceback" not in err

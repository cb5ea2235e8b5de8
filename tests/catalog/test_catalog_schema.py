"""The shipped catalog, and malformed catalogs: each problem names file, line
and what is wrong; `soak catalog validate` exits 10."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from soak.catalog.loader import default_catalog_dir, load_catalog
from soak.cli import main
from soak.errors import CatalogInvalid, ExitCode

GOOD = """\
- id: test-entry
  title: A test fault
  description: seen in tests
  severity: high
  match:
    kind: cl_error
    cl_code: [-5, CL_INVALID_COMMAND_QUEUE]
  applies_to:
    model_params: {min: 0.5B, max: 2B}
    mnn_version: '>=3.5, <3.6.1'
  remedy:
    cause: testing
    references: [https://github.com/alibaba/MNN/issues/1]
"""



def write(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "cat"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return d


def test_shipped_catalog_validates_and_is_seeded():
    cat = load_catalog()
    assert cat.path == default_catalog_dir()
    seeded = [e for e in cat.entries if not e.id.startswith("soak-")]
    soak_own = [e for e in cat.entries if e.id.startswith("soak-")]
    assert len(seeded) >= 37 and len(soak_own) >= 30
    for e in seeded:
        assert e.reports, e.id
        assert e.remedy.references and all(r.startswith("https://github.com/") for r in e.remedy.references), e.id
    # 37 public reports are seeded; each entry cites them by URL (nothing outside the repository)
    covered = {r for e in seeded for r in e.reports}
    assert len(covered) >= 37
    for e in cat.entries:
        assert all(re.match(r"^https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+$", r) for r in e.reports), e.id
    # a report entry cites its own report: mnn-NNNN -> alibaba/MNN/issues/NNNN, mnnllm-NNN -> wangzhaode/mnn-llm
    for e in seeded:
        repo, number = e.id.split("-")[:2]
        want = {"mnn": "alibaba/MNN", "mnnllm": "wangzhaode/mnn-llm"}[repo]
        assert any(r.endswith(f"{want}/issues/{number}") or r.endswith(f"{want}/pull/{number}") for r in e.reports), e.id
        assert set(e.reports) & set(e.remedy.references), e.id
    # soak's own faults named in issue 5 are there
    ids = {e.id for e in cat.entries}
    assert {"soak-cpu-fallback", "soak-sticky-error-state", "soak-kv-cache-growth-failure", "soak-hang",
            "soak-host-memory-leak", "soak-gpu-memory-leak", "soak-crash", "soak-dead-queue-flood",
            "soak-nvidia-illegal-memory-access", "soak-context-overflow", "soak-kernels-failing-tps-up"} <= ids


def test_every_catalog_file_has_incident_comments():
    for path in sorted(default_catalog_dir().glob("*.yaml")):
        assert path.read_text().lstrip().startswith("#"), path.name
    # every report entry is preceded by a comment naming its incident
    for path in sorted(default_catalog_dir().glob("*.yaml")):
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            m = re.match(r"- id: (mnn(?:llm)?-(\d+))", line)
            if m:
                above = "\n".join(lines[max(0, n - 6):n])
                assert "#" in above and m.group(2) in above, (path.name, m.group(1))


def test_good_minimal_catalog(tmp_path):
    cat = load_catalog(write(tmp_path, {"a.yaml": GOOD}))
    e = cat.get("test-entry")
    assert e.severity == "high" and e.applies_to.model_params == (5e8, 2e9)
    assert e.source.endswith("a.yaml:1")


CASES = {
    "yaml-syntax": ("""\
        - id: broken
          title: [unclosed
          description: x
        """, 3, "YAML syntax error"),
    "unknown-key": (GOOD.replace("  severity: high", "  severty: high"), 4,
                    "unknown key 'severty' (did you mean 'severity'?)"),
    "unknown-matcher": (GOOD.replace("    cl_code:", "    cl_cod:"), 7, "unknown key 'cl_cod'"),
    "missing-entry-key": (GOOD.replace("  title: A test fault\n", ""), 1, "missing required key 'title'"),
    "wrong-type-match": (GOOD.replace("  match:\n    kind: cl_error\n    cl_code: [-5, CL_INVALID_COMMAND_QUEUE]",
                                      "  match: cl_error"), 5, "match must be a mapping, not str 'cl_error'"),
    "wrong-type-severity": (GOOD.replace("severity: high", "severity: 3"), 4, "int 3 is not one of critical"),
    "wrong-type-window": (GOOD.replace("{min: 0.5B, max: 2B}", "{min: lots}"), 9,
                          "model_params.min must be a number or a size like 1.5B"),
    "bad-regex": (GOOD.replace("    cl_code: [-5, CL_INVALID_COMMAND_QUEUE]", "    log: 'CL ERROR CODE : (-5'"), 7,
                  "bad regex"),
    "bad-cl-code": (GOOD.replace("CL_INVALID_COMMAND_QUEUE", "CL_NO_SUCH_THING"), 7,
                    "'CL_NO_SUCH_THING' is not a CL error code"),
    "bad-version": (GOOD.replace("'>=3.5, <3.6.1'", "'about 3'"), 10, "bad version clause 'about 3'"),
    "missing-required": (GOOD.replace("  remedy:\n    cause: testing\n", "  remedy:\n"), 12,
                         "missing required key 'cause'"),
    "duplicate-key": (GOOD.replace("  severity: high\n", "  severity: high\n  severity: low\n"), 5,
                      "duplicate key 'severity' (first at line 4)"),
    "comment-cut": (GOOD.replace("cause: testing", "cause: fixed by PR #3511"), 12, "cut at ' #'"),
    "bad-url": (GOOD.replace("[https://github.com/alibaba/MNN/issues/1]", "[see the issue]"), 13, "is not a URL"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_entry_names_file_line_and_problem(tmp_path, case, capsys):
    text, line, what = CASES[case]
    d = write(tmp_path, {"ok.yaml": GOOD.replace("test-entry", "other-entry"), "bad.yaml": text})
    with pytest.raises(CatalogInvalid) as exc:
        load_catalog(d)
    msg = exc.value.message
    assert f"bad.yaml:{line}: " in msg and what in msg, msg
    assert "ok.yaml" not in msg
    rc = main(["catalog", "validate", "--catalog", str(d)])
    assert rc == ExitCode.CATALOG_INVALID == 10
    err = capsys.readouterr().err
    assert f"bad.yaml:{line}: " in err and "Traceback" not in err and "hint:" in err


def test_duplicate_id_across_files(tmp_path, capsys):
    d = write(tmp_path, {"a.yaml": GOOD, "b.yaml": "# again\n" + GOOD})
    with pytest.raises(CatalogInvalid) as exc:
        load_catalog(d)
    assert re.search(r"b\.yaml:2: duplicate id 'test-entry' \(first defined at \S*a\.yaml:1\)", exc.value.message)
    assert main(["catalog", "validate", "--catalog", str(d)]) == 10


def test_all_problems_listed_at_once(tmp_path):
    bad = GOOD.replace("severity: high", "severity: huge").replace("kind: cl_error", "kind: oops")
    d = write(tmp_path, {"bad.yaml": bad})
    with pytest.raises(CatalogInvalid) as exc:
        load_catalog(d)
    assert "bad.yaml:4:" in exc.value.message and "bad.yaml:6:" in exc.value.message
    assert "(2 problems)" in exc.value.message


def test_missing_or_empty_catalog_folder(tmp_path, capsys):
    assert main(["catalog", "validate", "--catalog", str(tmp_path / "nope")]) == 10
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["catalog", "list", "--catalog", str(tmp_path / "empty")]) == 10
    assert "holds no .yaml files" in capsys.readouterr().err


def test_not_utf8_file(tmp_path):
    d = write(tmp_path, {"a.yaml": GOOD})
    (d / "b.yaml").write_bytes(b"- id: x\n  title: \xff\xfe\n")
    with pytest.raises(CatalogInvalid, match=r"b\.yaml:1: not UTF-8"):
        load_catalog(d)


def test_no_default_catalog_is_clear(tmp_path, monkeypatch, capsys):
    """A non-editable install has no fault_catalog/ beside the package."""
    import soak.catalog.loader as loader

    monkeypatch.setattr(loader, "default_catalog_dir", lambda: None)
    assert main(["catalog", "validate"]) == 10
    err = capsys.readouterr().err
    assert "no fault catalog found" in err and "--catalog DIR" in err and "SOAK_CATALOG" in err


def test_env_var_selects_catalog(tmp_path, monkeypatch, capsys):
    d = write(tmp_path, {"a.yaml": GOOD})
    monkeypatch.setenv("SOAK_CATALOG", str(d))
    assert main(["catalog", "validate"]) == 0
    assert "1 entries in 1 files, valid" in capsys.readouterr().out


def test_cli_list_and_show(capsys):
    assert main(["catalog", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnn-2502-glm6b-queue-lost" in out and "soak-cpu-fallback" in out
    assert main(["catalog", "show", "mnn-3726-qwen3-0.6b-9999-punctuation"]) == 0
    out = capsys.readouterr().out
    assert "https://github.com/alibaba/MNN/issues/3726" in out and "multi-round.yaml" not in out
    assert "nvidia.yaml:" in out
    assert main(["catalog", "show", "mnn-3726"]) == 3
    assert "did you mean mnn-3726-qwen3-0.6b-9999-punctuation" in capsys.readouterr().err
    assert main(["catalog", "validate"]) == 0
    assert "valid (38 from reports" in capsys.readouterr().out


def test_readme_documents_every_key():
    from soak.catalog.schema import APPLIES_KEYS, MATCH_KEYS

    text = (default_catalog_dir() / "README.md").read_text()
    for key in list(MATCH_KEYS) + list(APPLIES_KEYS):
        assert f"`{key}`" in text, key

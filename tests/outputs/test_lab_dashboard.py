"""Night after night (issue 26): a simulated lab of 30 nights x 4 phones (tests/outputs/_lab.py
states its script) stored in the history; `soak history status` and the dashboard in headless
Chromium show exactly the labels and ranges the script implies; hostile strings through every
field are shown as text and never run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import _browser  # tests/outputs/conftest.py puts this folder on sys.path
import _lab
import pytest

from soak import history

NIGHT = "2026-11-{:02d}".format


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    source = _lab.real_run(root / "src")
    runs = _lab.make_lab(source, root / "logs")
    db = root / "history.sqlite"
    conn = history.connect(db)
    history.add_runs(conn, runs)
    conn.close()
    return {"root": root, "db": db, "keys": _lab.keys_by_role(source), "runs": runs}


def _soak(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soak", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_lab_s_labels_and_ranges(lab):
    conn = history.connect(lab["db"])
    view = history.lab(conn)
    k = lab["keys"]
    causes = {c["key"]: c for c in view["causes"]}
    assert set(causes) == set(k.values())
    assert view["nights"] == [NIGHT(n) for n in range(1, 31)] and view["runs"] == 120
    assert view["counts"] == {"new": 1, "regressed": 1, "flaky": 1, "open": 1, "not seen lately": 1, "fixed": 1}

    reg = causes[k["REGRESSION"]]
    assert (reg["status"], reg["first_night"], reg["last_night"]) == ("regressed", NIGHT(10), NIGHT(30))
    assert (reg["nights_seen"], reg["nights_run"], reg["reliability"]) == (84, 84, 1.0)
    assert reg["regression"]["changed"] == ["build"]
    assert (reg["regression"]["from"]["build"], reg["regression"]["to"]["build"]) == ("3.6.0", "3.6.1")
    assert (reg["regression"]["from"]["night"], reg["regression"]["to"]["night"]) == (NIGHT(9), NIGHT(10))
    # every bench that ran before night 10 shows the same range; Pixel-7's 0.5B bench began with it
    assert sorted((r["bench"][0], r["bench"][1], r["from"]["build"], r["to"]["build"]) for r in reg["regressions"]) == [
        ("Pixel-7", "qwen2 1.5B", "3.6.0", "3.6.1"), ("Pixel-8", "qwen2 0.5B", "3.6.0", "3.6.1"),
        ("SM-A546", "qwen2 0.5B", "3.6.0", "3.6.1"), ("SM-S911", "qwen2 0.5B", "3.6.0", "3.6.1")]
    assert reg["fix"] is None

    fix = causes[k["FIXED"]]
    assert (fix["status"], fix["first_night"], fix["last_night"]) == ("fixed", NIGHT(1), NIGHT(16))
    assert fix["clean_nights_after"] == 14 and (fix["nights_seen"], fix["nights_run"]) == (30, 30)
    assert fix["fix"]["changed"] == ["driver"]
    assert (fix["fix"]["from"]["driver"], fix["fix"]["to"]["driver"], fix["fix"]["to"]["night"]) == \
        ("512.744", "512.800", NIGHT(17))
    assert sorted((f["bench"][0], f["from"]["night"], f["to"]["night"]) for f in fix["fixes"]) == [
        ("SM-A546", NIGHT(16), NIGHT(17)), ("SM-S911", NIGHT(14), NIGHT(15))]
    assert fix["regression"] is None and fix["devices"] == ["SM-A546", "SM-S911"]
    assert {(m["device"], m["driver"]): (m["nights_seen"], m["nights_run"]) for m in fix["matrix"]} == {
        ("SM-S911", "512.700"): (5, 5), ("SM-S911", "512.744"): (9, 9),
        ("SM-A546", "512.700"): (5, 5), ("SM-A546", "512.744"): (11, 11)}

    flaky = causes[k["FLAKY"]]
    assert (flaky["status"], flaky["first_night"], flaky["last_night"]) == ("flaky", NIGHT(3), NIGHT(29))
    assert (flaky["nights_seen"], flaky["nights_run"]) == (9, 30) and flaky["reliability"] == pytest.approx(0.3)
    assert flaky["regression"] is None  # it came and went on one build and driver: no range

    stopped = causes[k["STOPPED"]]
    assert (stopped["status"], stopped["first_night"], stopped["last_night"]) == ("not seen lately", NIGHT(1), NIGHT(20))
    assert stopped["clean_nights_after"] == 0 and stopped["fix"] is None  # its bench never ran again: not fixed
    assert stopped["benches"] == [["Pixel-7", "qwen2 1.5B", "opencl", "test 8 tok 4 turns"]]

    new = causes[k["NEW"]]
    assert (new["status"], new["first_night"], new["last_night"], new["devices"]) == ("new", NIGHT(30), NIGHT(30), ["SM-A546"])
    opened = causes[k["OPEN"]]
    assert (opened["status"], opened["nights_seen"], opened["nights_run"], opened["regression"]) == ("open", 30, 30, None)

    # `fixed` needs N clean nights: with 15, the 14 clean nights are not enough
    strict = {c["key"]: c["status"] for c in history.lab(conn, fixed_after=15)["causes"]}
    assert strict[k["FIXED"]] == "not seen lately"
    # the lab's matrix: Pixel-7 ran two models; every phone three drivers
    cells = {(m["device"], m["driver"], m["model"]) for m in view["matrix"]}
    assert ("Pixel-7", "r45p0", "qwen2 1.5B") in cells and ("Pixel-7", "r45p0", "qwen2 0.5B") in cells
    for phone in _lab.PHONES:
        assert len({m["driver"] for m in view["matrix"] if m["device"] == phone}) == 3
    conn.close()


def test_soak_history_status_says_the_same(lab, tmp_path):
    k = lab["keys"]
    proc = _soak("history", "--db", str(lab["db"]), "status", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0] if not line.startswith("not seen") else "not seen lately": line
             for line in proc.stdout.splitlines()[2:]}
    assert k["REGRESSION"] in lines["regressed"] and "since build 3.6.0 -> 3.6.1" in lines["regressed"]
    assert k["FIXED"] in lines["fixed"] and "fixed driver 512.744 -> 512.800" in lines["fixed"]
    assert k["FLAKY"] in lines["flaky"] and " 9/30 " in lines["flaky"]
    assert k["STOPPED"] in lines["not seen lately"] and k["NEW"] in lines["new"] and k["OPEN"] in lines["open"]
    proc = _soak("history", "--db", str(lab["db"]), "--json", "status", k["FIXED"], cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "fixed"
    proc = _soak("history", "--db", str(lab["db"]), "status", k["FIXED"], "--fixed-after", "0", cwd=tmp_path)
    assert proc.returncode == 3 and "--fixed-after" in proc.stderr and "Traceback" not in proc.stderr
    proc = _soak("history", "--db", str(lab["db"]), "status", "no-such-cause", cwd=tmp_path)
    assert proc.returncode == 3 and "no finding" in proc.stderr
    (tmp_path / "afile").write_text("")
    proc = _soak("history", "--db", str(lab["db"]), "html", "-o", str(tmp_path / "afile"), cwd=tmp_path)
    assert proc.returncode == 3 and "is not a folder" in proc.stderr and "Traceback" not in proc.stderr


def _rows(dom) -> dict[str, _browser.Node]:
    return {tr.attrs["data-key"]: tr for tr in dom.iter("tr") if "data-status" in tr.attrs}


def test_the_dashboard_in_chromium(lab, tmp_path, keep_artifact):
    k = lab["keys"]
    site = tmp_path / "site"
    proc = _soak("history", "--db", str(lab["db"]), "html", "-o", str(site), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 new, 1 regressed, 1 flaky, 1 open, 1 not seen lately, 1 fixed" in proc.stdout
    index = site / "index.html"

    dom, err = _browser.dump_dom(index.as_uri(), tmp_path / "p1")
    assert _browser.console_lines(err) == []
    for status in history.STATUSES:
        assert dom.by_id("count-" + status.replace(" ", "-")).text == "1"
    rows = _rows(dom)
    assert {key: tr.attrs["data-status"] for key, tr in rows.items()} == {
        k["NEW"]: "new", k["REGRESSION"]: "regressed", k["FLAKY"]: "flaky", k["OPEN"]: "open",
        k["STOPPED"]: "not seen lately", k["FIXED"]: "fixed"}
    assert not any(tr.hidden for tr in rows.values()) and dom.by_id("shown").text == "6"
    assert "3.6.0 → 3.6.1" in rows[k["REGRESSION"]].find(class_="range").text
    assert "512.744 → 512.800" in rows[k["FIXED"]].find(class_="range").text
    assert rows[k["FLAKY"]].find(None, data_reliability=True).text == "9/30 (30%)"
    for key, tr in rows.items():  # every cause links its page, and the page is there
        href = tr.find("a", class_="cause").attrs["href"]
        assert (site / href).is_file(), href
    assert len(list(dom.by_id("matrix").iter("tr"))) == 1 + 13  # header + device x driver x model x backend

    # the filters work offline, and the address keeps them
    dom, err = _browser.dump_dom(index.as_uri() + "#status=flaky", tmp_path / "p2")
    shown = [key for key, tr in _rows(dom).items() if not tr.hidden]
    assert shown == [k["FLAKY"]] and dom.by_id("shown").text == "1"
    assert dom.find("section", data_section="fixed").hidden
    dom, _ = _browser.dump_dom(index.as_uri() + "#device=Pixel-7", tmp_path / "p3")
    assert sorted(key for key, tr in _rows(dom).items() if not tr.hidden) == sorted([k["REGRESSION"], k["STOPPED"]])
    dom, _ = _browser.dump_dom(index.as_uri() + "#q=driver%20512.744", tmp_path / "p4")
    assert [key for key, tr in _rows(dom).items() if not tr.hidden] == [k["FIXED"]]

    # the page of the fixed cause
    page = site / rows[k["FIXED"]].find("a", class_="cause").attrs["href"]
    dom, err = _browser.dump_dom(page.as_uri(), tmp_path / "p5")
    assert _browser.console_lines(err) == []
    assert dom.by_id("status").text == "fixed"
    assert (dom.by_id("first-night").text, dom.by_id("last-night").text) == (NIGHT(1), NIGHT(16))
    assert dom.by_id("fix").text.startswith("driver 512.744 → 512.800 (last bad 2026-11-16, first good 2026-11-17")
    assert dom.by_id("regression").text == "–" and dom.by_id("clean-after").text.startswith("14 ")
    svg = dom.find("svg")
    assert svg.attrs["data-nights"] == "30" and len(list(svg.iter("rect", class_="seen"))) == 16
    assert sum(int(r.attrs["data-nights"]) for r in svg.iter("rect", class_="clean")) == 14
    assert len(list(dom.by_id("matrix").iter("tr"))) == 1 + 4
    assert "CL_OUT_OF_RESOURCES" in dom.find("dl", class_="catalog").text  # the catalog entry and its remedy
    assert dom.find("dd", class_="remedy").text.strip() not in ("", "–")
    run_link = dom.find("a", class_="run").attrs["href"]
    assert (page.parent / run_link / "manifest.json").is_file()
    assert f"--fault {k['FIXED']}" in dom.find("code", class_="bundle").text

    for name, url in (("dashboard-index", index.as_uri()), ("dashboard-cause", page.as_uri())):
        shot = tmp_path / f"{name}.png"
        _browser.screenshot(url, shot, tmp_path / f"s-{name}")
        assert shot.stat().st_size > 20_000  # a page with tables and a chart, not a blank one
        keep_artifact(shot)


def test_a_repro_is_recorded_and_linked(lab, tmp_path):
    """RUN/repro/repro.json (the format soak.history.read_repro defines): the history keeps it
    and the cause's page links it with its reliability."""
    k = lab["keys"]
    run = tmp_path / "night30-SM-S911"
    shutil.copytree(next(r for r in lab["runs"] if r.name == "night30-SM-S911"), run)
    (run / "repro").mkdir()
    (run / "repro" / "crash.json").write_text("{}")
    (run / "repro" / "repro.json").write_text(json.dumps({"schema": 1, "causes": [
        {"key": k["REGRESSION"], "attempts": 5, "reproduced": 4, "path": "repro/crash.json",
         "command": "soak repro RUN --cause " + k["REGRESSION"]}, {"key": 7}, "junk"]}))
    db = tmp_path / "h.sqlite"
    shutil.copyfile(lab["db"], db)
    conn = history.connect(db)
    history.add_runs(conn, [run])
    c = next(c for c in history.lab(conn)["causes"] if c["key"] == k["REGRESSION"])
    assert (c["repro"]["attempts"], c["repro"]["reproduced"], c["repro"]["reliability"]) == (5, 4, 0.8)
    from soak.outputs.dashboard import write_site

    write_site(conn, tmp_path / "site")
    conn.close()
    dom, _ = _browser.dump_dom((tmp_path / "site" / "index.html").as_uri(), tmp_path / "p")
    page = tmp_path / "site" / _rows(dom)[k["REGRESSION"]].find("a", class_="cause").attrs["href"]
    dom, _ = _browser.dump_dom(page.as_uri(), tmp_path / "p2")
    assert dom.by_id("repro").text == "4/5"
    assert (page.parent / dom.find("a", class_="repro").attrs["href"]).is_file()


HOSTILE = "<script>document.body.setAttribute('data-pwned','1')</script>\"'><img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">&amp;</td></table>\u202e"


def test_hostile_strings_in_every_field_are_text(lab, tmp_path, keep_artifact):
    """Every string a run brings (device, serial, GPU, driver, build, model, backend, run id,
    cause key, title, severity, repro path and command) carries markup; the site shows it as
    text, runs none of it, and writes nowhere but its folder."""
    src = lab["runs"][0]
    runs = []
    for n in (1, 2):
        run = tmp_path / "logs" / f"night{n}-{HOSTILE[:8].replace('/', '_')}'\"&{n}"
        shutil.copytree(src, run)
        m = json.loads((run / "manifest.json").read_text())
        m.update({"run_id": f"{HOSTILE}-{n}", "started": f"2026-11-0{n}T22:00:00+00:00", "mnn_version": HOSTILE,
                  "backend_actual": HOSTILE, "opencl": {"device": HOSTILE, "driver_version": HOSTILE},
                  "device": {"model": HOSTILE, "serial": HOSTILE}, "model": {"family": HOSTILE, "size_label": "1B"},
                  "config": dict(m["config"], engine=HOSTILE)})
        (run / "manifest.json").write_text(json.dumps(m))
        c = json.loads((run / "classification.json").read_text())
        cause = dict(c["causes"][0], fault_id=f"../../{HOSTILE}", title=HOSTILE, severity=HOSTILE, signature=HOSTILE)
        c["causes"] = [cause]
        (run / "classification.json").write_text(json.dumps(c))
        (run / "gate.json").write_text(json.dumps({"causes": [{"key": cause["fault_id"], "label": HOSTILE}]}))
        (run / "repro").mkdir()
        (run / "repro" / "repro.json").write_text(json.dumps({"causes": [
            {"key": cause["fault_id"], "attempts": 2, "reproduced": 1, "path": f"javascript:{HOSTILE}",
             "command": HOSTILE}]}))
        runs.append(run)
    conn = history.connect(tmp_path / "h.sqlite")
    history.add_runs(conn, runs)
    from soak.outputs.dashboard import write_site

    site = tmp_path / "site"
    write_site(conn, site)
    conn.close()
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.html"))
    assert written and all(str(p).startswith("site/") for p in written), written
    assert len(list((site / "causes").iterdir())) == 1
    for i, page in enumerate([site / "index.html", *sorted((site / "causes").iterdir())]):
        dom, err = _browser.dump_dom(page.as_uri(), tmp_path / f"p{i}")
        body = dom.find("body")
        assert "data-pwned" not in body.attrs, page
        assert not list(dom.iter("img")), page
        assert len(list(dom.iter("script"))) == (1 if page.name == "index.html" else 0)
        assert HOSTILE in body.text, page  # shown, as text
        for a in dom.iter("a"):
            assert not a.attrs.get("href", "").lower().startswith("javascript:"), a.attrs
        assert not [line for line in _browser.console_lines(err) if "pwned" in line], err[-2000:]
    shot = tmp_path / "dashboard-hostile.png"
    _browser.screenshot((site / "index.html").as_uri(), shot, tmp_path / "s")
    keep_artifact(shot)

"""`soak history html -o DIR`: the lab's dashboard, a static site (issue 26).

    DIR/index.html            causes by status (new, regressed, flaky, still open, not seen
                              lately, fixed), the device x driver x model x backend matrix,
                              filters (status, device, text) that work offline
    DIR/causes/<slug>.html    one page per cause: its nights (an inline SVG chart), its ranges,
                              its configuration matrix, its catalog entry and remedy, links to
                              its latest run folder, the bundle command and its repro
    DIR/history.json          the same numbers for machines (soak.history.lab)

No server, no network: inline CSS and SVG; one small inline script (the filters) allowed by
its SHA-256 in the Content-Security-Policy, so nothing a run's strings could inject runs.
The filter state lives in the address (`index.html#status=flaky&device=...`): a link or a
bookmark keeps it.  Every string from a run or the catalog goes through `esc`.

Reads only the history database and the catalog; writes only DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from soak import history
from soak.errors import BadInput
from soak.outputs.html_page import esc as _e, page_head

INDEX = "index.html"
CAUSES = "causes"
DATA = "history.json"

_STATUS_TEXT = {"new": "new", "regressed": "regressed", "flaky": "flaky", "open": "still open",
                "not seen lately": "not seen lately", "fixed": "fixed"}
_CSS = (".st{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;white-space:nowrap}"
        ".st-new{background:#fde7ea;color:#b00020}.st-regressed{background:#fbe3d0;color:#8a3a00}"
        ".st-flaky{background:#fff4cc;color:#6d5200}.st-open{background:#e8eefc;color:#1a3d8f}"
        ".st-not-seen-lately{background:#eee;color:#555}.st-fixed{background:#e3f4e4;color:#1b5e20}"
        ".counts td{min-width:80px} .filters{margin:12px 0;display:flex;gap:12px;flex-wrap:wrap;align-items:center}"
        ".chart svg{max-width:100%;height:auto;border:1px solid #eee} .wide{overflow-x:auto}")

# The filters.  Static text (never built from data): its hash goes into the page's CSP.
FILTER_JS = r"""
(function () {
  function params() {
    var out = {}, h = location.hash.replace(/^#/, "");
    h.split("&").forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf("=");
      try {
        out[decodeURIComponent(i < 0 ? kv : kv.slice(0, i))] = decodeURIComponent(i < 0 ? "" : kv.slice(i + 1));
      } catch (e) { /* a broken address filters nothing */ }
    });
    return out;
  }
  var st = document.getElementById("f-status"), dev = document.getElementById("f-device"),
      q = document.getElementById("f-text");
  function apply() {
    var p = params(), s = p.status || "", d = p.device || "", t = (p.q || "").toLowerCase(), shown = 0;
    st.value = s; dev.value = d; if (document.activeElement !== q) q.value = p.q || "";
    document.querySelectorAll("tr[data-status]").forEach(function (row) {
      var devices = JSON.parse(row.getAttribute("data-devices") || "[]");
      var ok = (!s || row.getAttribute("data-status") === s) && (!d || devices.indexOf(d) >= 0) &&
               (!t || row.textContent.toLowerCase().indexOf(t) >= 0);
      row.hidden = !ok;
      if (ok) shown++;
    });
    document.querySelectorAll("section[data-section]").forEach(function (sec) {
      sec.hidden = !sec.querySelector("tr[data-status]:not([hidden])");
    });
    document.getElementById("shown").textContent = String(shown);
  }
  function update() {
    var parts = [];
    if (st.value) parts.push("status=" + encodeURIComponent(st.value));
    if (dev.value) parts.push("device=" + encodeURIComponent(dev.value));
    if (q.value) parts.push("q=" + encodeURIComponent(q.value));
    history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname);
    apply();
  }
  st.addEventListener("change", update); dev.addEventListener("change", update); q.addEventListener("input", update);
  window.addEventListener("hashchange", apply);
  apply();
})();
"""


def slug(key: str) -> str:
    """A file name for a cause: its key made safe, plus a hash when that changed it (unique)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80].strip("._") or "cause"
    return safe if safe == key else f"{safe}-{hashlib.sha1(key.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def _status(s: str) -> str:
    return f"<span class='st st-{_e(s.replace(' ', '-'))}' data-label='{_e(s)}'>{_e(_STATUS_TEXT.get(s, s))}</span>"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _range_text(rng: dict | None, last: str, first: str) -> str:
    """`build 3.6.0 → 3.6.1` (and/or the driver), with the nights."""
    if not rng:
        return "–"
    parts = [f"{'MNN build' if k == 'build' else 'driver'} {rng['from'][k] or '?'} → {rng['to'][k] or '?'}"
             for k in rng["changed"]]
    return (f"{'; '.join(parts)} ({last} {rng['from']['night']}, {first} {rng['to']['night']}, "
            f"on {rng['bench'][0]})")


def _href(out_dir: Path, target: str | None) -> str | None:
    if not target:
        return None
    try:
        rel = os.path.relpath(Path(target), out_dir.resolve())
    except ValueError:  # another drive
        rel = str(Path(target))
    return "/".join(rel.split(os.sep))


def _chart(c: dict, nights: list[str], bench_nights: set[str]) -> str:
    """Runs with the cause per night (red), nights its benches ran without it (grey)."""
    n = len(nights)
    w, h, pad, head = max(600, min(1100, 12 * n)), 130, 22, 24
    bw = (w - 2 * pad) / max(n, 1)
    top = max((v["runs"] for v in c["per_night"].values()), default=1)
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' role='img' viewBox='0 0 {w} {h + 28}' width='{w}' "
           f"height='{h + 28}' data-nights='{n}' data-nights-seen='{len(c['per_night'])}'>"
           f"<title>{_e(c['key'])}: runs with it per night</title>"
           f"<line x1='{pad}' y1='{h}' x2='{w - pad}' y2='{h}' stroke='#999'/>"]
    clean: list[int] = []   # a stretch of clean nights: one rect (a thousand nights stay small)

    def flush():
        if clean:
            a, b = clean[0], clean[-1]
            out.append(f"<rect class='clean' data-nights='{len(clean)}' x='{pad + a * bw:.1f}' y='{h - 3}' "
                       f"width='{max((b - a + 1) * bw - 1, 1):.1f}' height='3' fill='#9e9e9e'><title>"
                       f"{_e(nights[a])}{' .. ' + _e(nights[b]) if b > a else ''}: ran clean</title></rect>")
            clean.clear()

    for i, night in enumerate(nights):
        x = pad + i * bw
        v = c["per_night"].get(night)
        if v:
            flush()
            bh = max(4.0, (h - head) * v["runs"] / top)
            out.append(f"<rect class='seen' x='{x:.1f}' y='{h - bh:.1f}' width='{max(bw - 1, 1):.1f}' "
                       f"height='{bh:.1f}' fill='#b00020'><title>{_e(night)}: {v['runs']} run(s), "
                       f"{v['count']} occurrence(s)</title></rect>")
        elif night in bench_nights:
            clean.append(i)
        else:
            flush()
    flush()
    out.append(f"<text x='{pad}' y='{h + 16}' font-size='11'>{_e(nights[0] if nights else '')}</text>"
               f"<text x='{w - pad}' y='{h + 16}' font-size='11' text-anchor='end'>{_e(nights[-1] if nights else '')}"
               f"</text><text x='{pad}' y='12' font-size='11'><tspan fill='#b00020'>■</tspan> runs with it "
               f"(tallest: {top}) <tspan fill='#9e9e9e'>■</tspan> its benches ran clean</text></svg>")
    return "".join(out)


def _catalog_entry(key: str, catalog) -> str:
    entry = catalog.get(key) if catalog is not None else None
    if entry is None:
        return ("<p class=muted>Not in the catalog: the key is the classifier's signature of the fault; an "
                "entry in fault_catalog/ (<code>soak catalog validate</code>) would name it and give its "
                "remedy.</p>") if key.startswith("sig-") else \
               "<p class=muted>No entry with this id in the catalog this soak reads.</p>"
    rem = entry.remedy
    return (f"<dl class=catalog><dt>id</dt><dd><code>{_e(entry.id)}</code></dd><dt>title</dt><dd>{_e(entry.title)}</dd>"
            f"<dt>severity</dt><dd>{_e(entry.severity)}</dd><dt>what is seen</dt><dd>{_e(entry.description)}</dd>"
            f"<dt>cause</dt><dd>{_e(rem.cause)}</dd><dt>workaround</dt><dd class=remedy>{_e(rem.workaround or '–')}</dd>"
            f"<dt>fixed in</dt><dd>{_e(rem.fixed_in or '–')}</dd><dt>references</dt><dd>"
            + "<br>".join(f"<a href='{_e(u)}' rel=noreferrer>{_e(u)}</a>" for u in
                          dict.fromkeys((*rem.references, *entry.reports)) if re.match(r"https?://", u))
            + "</dd></dl>")


def _cause_row(c: dict, href: str) -> str:
    reg = c["regression"]
    fix = c["fix"]
    rng = ("fixed: " + _range_text(fix, "last bad", "first good") if fix else
           "regressed: " + _range_text(reg, "last good", "first bad") if reg and c["status"] != "fixed" else "–")
    return (f"<tr data-status='{_e(c['status'])}' data-key='{_e(c['key'])}' "
            f"data-devices='{_e(json.dumps(c['devices']))}'>"
            f"<td>{_status(c['status'])}</td><td><a class=cause href='{_e(href)}'><code>{_e(c['key'])}</code></a></td>"
            f"<td>{_e(c['title'])}</td><td><span class='sev-{_e(c['severity'])}'>{_e(c['severity'] or '–')}</span></td>"
            f"<td>{_e(c['first_night'])}</td><td>{_e(c['last_night'])}</td>"
            f"<td class=num data-reliability>{c['nights_seen']}/{c['nights_run']} ({_pct(c['reliability'])})</td>"
            f"<td class=range>{_e(rng)}</td><td>{_e(', '.join(c['devices']))}</td>"
            f"<td>{'yes ' + _pct(c['repro']['reliability']) if c['repro'] else '–'}</td></tr>")


_HEAD = ("<tr><th>status</th><th>cause</th><th>title</th><th>severity</th><th>first night</th><th>last night</th>"
         "<th>nights seen / run</th><th>range</th><th>devices</th><th>repro</th></tr>")


def render_index(view: dict) -> str:
    causes = view["causes"]
    title = f"soak history: {len(view['nights'])} nights, {view['runs']} runs, {len(causes)} causes"
    devices = sorted({m["device"] for m in view["matrix"]})
    p = [page_head(title, _CSS, scripts=(FILTER_JS,)) + f"<h1>{_e(title)}</h1>",
         f"<p class=muted>latest night {_e(view['latest_night'] or '–')}; a cause is <b>fixed</b> after "
         f"{view['fixed_after']} clean nights on the benches that had it, <b>flaky</b> when seen on fewer than "
         f"{_pct(view['flaky_below'])} of the nights its configurations ran. Written by <code>soak history html</code>; "
         "no server, no network.</p>",
         "<table class=counts><tbody><tr>" + "".join(
             f"<td>{_status(s)} <b id='count-{_e(s.replace(' ', '-'))}'>{view['counts'][s]}</b></td>"
             for s in history.STATUSES) + "</tr></tbody></table>",
         "<div class=filters><label>status <select id=f-status><option value=''>any</option>"
         + "".join(f"<option value='{_e(s)}'>{_e(_STATUS_TEXT[s])}</option>" for s in history.STATUSES)
         + "</select></label><label>device <select id=f-device><option value=''>any</option>"
         + "".join(f"<option value='{_e(d)}'>{_e(d)}</option>" for d in devices)
         + "</select></label><label>text <input id=f-text type=search placeholder='key, title, driver…'></label>"
         f"<span><b id=shown>{len(causes)}</b> of {len(causes)} causes shown</span></div>"]
    for s in history.STATUSES:
        rows = [c for c in causes if c["status"] == s]
        if not rows:
            continue
        p.append(f"<section data-section='{_e(s)}' id='section-{_e(s.replace(' ', '-'))}'>"
                 f"<h2>{_e(_STATUS_TEXT[s].capitalize())} ({len(rows)})</h2><div class=wide><table><thead>{_HEAD}"
                 "</thead><tbody>" + "".join(_cause_row(c, f"{CAUSES}/{slug(c['key'])}.html") for c in rows)
                 + "</tbody></table></div></section>")
    if not causes:
        p.append("<p class=good>No cause stored yet.</p>")
    p.append("<h2>Device × driver × model × backend</h2><div class=wide><table id=matrix><thead><tr><th>device</th>"
             "<th>driver</th><th>model</th><th>backend</th><th>nights</th><th>runs</th><th>causes seen</th></tr>"
             "</thead><tbody>")
    for m in view["matrix"]:
        links = ", ".join(f"<a href='{_e(CAUSES + '/' + slug(k) + '.html')}'>{_e(k)}</a>" for k in m["causes"])
        p.append(f"<tr><td>{_e(m['device'])}</td><td>{_e(m['driver'])}</td><td>{_e(m['model'])}</td>"
                 f"<td>{_e(m['backend'])}</td><td class=num>{m['nights']}</td><td class=num>{m['runs']}</td>"
                 f"<td>{links or '–'}</td></tr>")
    p.append(f"</tbody></table></div><script>{FILTER_JS}</script></body></html>")
    return "\n".join(p)


def render_cause(c: dict, view: dict, bench_nights: set[str], catalog, out_dir: Path) -> str:
    title = f"{c['key']}: {c['title'] or ''}"
    run_href = _href(out_dir / CAUSES, c["latest_run"]["run_dir"])
    p = [page_head(title, _CSS) + f"<p><a href='../{INDEX}'>← all causes</a></p>"
         f"<h1><code>{_e(c['key'])}</code> {_status(c['status'])}</h1><p>{_e(c['title'])}</p>",
         "<dl class=facts>"
         f"<dt>status</dt><dd id=status>{_e(c['status'])}</dd>"
         f"<dt>severity</dt><dd>{_e(c['severity'] or '–')}</dd>"
         f"<dt>first night</dt><dd id=first-night>{_e(c['first_night'])}</dd>"
         f"<dt>last night</dt><dd id=last-night>{_e(c['last_night'])}</dd>"
         f"<dt>nights seen / run</dt><dd id=reliability>{c['nights_seen']}/{c['nights_run']} ({_pct(c['reliability'])}) "
         "<span class=muted>on the configurations (bench, build, driver) that showed it</span></dd>"
         f"<dt>regression range</dt><dd id=regression>{_e(_range_text(c['regression'], 'last good', 'first bad'))}</dd>"
         f"<dt>fix range</dt><dd id=fix>{_e(_range_text(c['fix'], 'last bad', 'first good'))}</dd>"
         f"<dt>clean nights since</dt><dd id=clean-after>{c['clean_nights_after']} "
         f"<span class=muted>(fixed after {view['fixed_after']})</span></dd>"
         f"<dt>runs with it</dt><dd>{c['runs']} ({c['occurrences']} occurrences)</dd>"
         f"<dt>gate labels</dt><dd id=labels>{_e(', '.join(f'{k} ×{v}' for k, v in sorted(c['labels'].items())) or '–')}</dd>"
         "</dl>",
         f"<h2>Nights</h2><div class=chart>{_chart(c, view['nights'], bench_nights)}</div>",
         "<h2>Configurations</h2><div class=wide><table id=matrix><thead><tr><th>device</th><th>driver</th>"
         "<th>model</th><th>backend</th><th>nights seen / run</th></tr></thead><tbody>"]
    for m in c["matrix"]:
        p.append(f"<tr><td>{_e(m['device'])}</td><td>{_e(m['driver'])}</td><td>{_e(m['model'])}</td>"
                 f"<td>{_e(m['backend'])}</td><td class=num>{m['nights_seen']}/{m['nights_run']}</td></tr>")
    p.append("</tbody></table></div><h2>Catalog entry and remedy</h2>" + _catalog_entry(c["key"], catalog))
    run = c["latest_run"]
    p.append("<h2>Bundle and repro</h2><ul id=links>"
             f"<li>latest run: <a class=run href='{_e(run_href or '')}/'>{_e(run['run_id'])}</a> "
             f"(night {_e(run['night'])})</li>"
             f"<li>bundle: <code class=bundle>soak bundle {_e(run['run_dir'])} --fault {_e(c['key'])}</code></li>")
    if c["repro"]:
        r = c["repro"]
        p.append(f"<li>repro: reproduced <b id=repro>{r['reproduced']}/{r['attempts']}</b> "
                 f"({_pct(r['reliability'])})<ul>")
        for it in r["items"]:
            href = _href(out_dir / CAUSES, str(Path(it["run_dir"] or "") / (it["path"] or "")))
            p.append(f"<li><a class=repro href='{_e(href)}'>{_e(it['path'] or it['run_id'])}</a> "
                     f"{it['reproduced']}/{it['attempts']}"
                     + (f" <code>{_e(it['command'])}</code>" if it["command"] else "") + "</li>")
        p.append("</ul></li>")
    else:
        p.append("<li id=repro>repro: none recorded (<code>soak repro</code> writes RUN/repro/)</li>")
    p.append("</ul></body></html>")
    return "\n".join(p)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}", "give a writable folder with -o DIR") from None


def write_site(conn, out_dir: str | Path, fixed_after: int = history.FIXED_AFTER,
               flaky_below: float = history.FLAKY_BELOW, catalog=None) -> dict:
    """Write the dashboard; returns the lab view it shows."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is not a folder", "give a folder to -o (it is created if missing)")
    try:
        (out / CAUSES).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create {out}: {exc.strerror or exc}", "give a writable folder with -o DIR") from None
    if catalog is None:
        from soak.catalog.loader import load_catalog

        catalog = load_catalog()
    nights_run = [n for n, in conn.execute("SELECT DISTINCT night FROM runs WHERE night IS NOT NULL ORDER BY night")]

    def page(c: dict, bench_nights: dict) -> dict:
        """Write the cause's page now; keep what the index and history.json show."""
        ran = set().union(*(bench_nights.get(tuple(b), set()) for b in c["benches"]))
        _write(out / CAUSES / f"{slug(c['key'])}.html",
               render_cause(c, {"nights": nights_run, "fixed_after": fixed_after}, ran, catalog, out))
        return {k: v for k, v in c.items() if k not in ("per_night", "matrix")}

    view = history.lab(conn, fixed_after, flaky_below, each=page)
    _write(out / INDEX, render_index(view))
    _write(out / DATA, json.dumps(view, indent=1, ensure_ascii=False) + "\n")
    return view

"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network).

Sections: summary and verdicts, fault table (linked to the catalog entries
and their references), the timeline plots (soak.outputs._plots), recovery, the
wrong-answer oracle of --reference runs (checked turns, the wrong ones, per-turn KL),
the GPU profile of --cl-profile runs (soak.analysis.profile), environment.  Several runs are shown side by side and overlaid in the plots;
with a baseline, each run's tok/s and latency are compared against it.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from soak.analysis.perf import compare
from soak.analysis.loaded_run import RunFolder
from soak.analysis.verdicts import compute_verdicts
from soak.errors import BadInput
from soak import run_folder
from soak.run_folder import write_bytes
from soak.outputs._findings import fault_events, findings_with_events, open_run
from soak.outputs.html_page import esc as _e, page_head


def _size(n) -> str:
    if not isinstance(n, (int, float)):
        return "–"
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n:.0f} B"


def _num(v, fmt="{:.3g}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "–"


def _anchor(fault_id: str) -> str:
    return "catalog-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in fault_id)


def _verdict_cls(v: str) -> str:
    return {"leak": "bad", "ratchet": "bad", "retained": "bad", "degrading": "bad", "growth_stopped": "warn",
            "forward_stopped": "bad",
            "stable": "good"}.get(v, "muted")


class _Run:
    def __init__(self, path, baseline: RunFolder | None):
        self.folder = open_run(path)
        self.verdicts = compute_verdicts(self.folder, baseline, write=False)
        self.findings = findings_with_events(self.folder)


def _summary(runs: list[_Run]) -> str:
    rows = [("run", lambda r: f"<b>{_e(r.folder.run_id)}</b>"),
            ("engine", lambda r: _e(r.folder.manifest.get("engine_name") or r.folder.manifest.get("engine"))),
            ("backend (asked → ran on)", lambda r: _backend_cell(r.folder)),
            ("iterations", lambda r: _e(r.folder.iteration_count)),
            ("elapsed", lambda r: _e(_dt.timedelta(seconds=round(r.folder.elapsed_s or 0)))),
            ("ended by", lambda r: _e(_ended_by(r.folder))),
            ("faults", lambda r: _e(len(fault_events(r.folder)))),  # the one count (soak.fault_kinds)
            ("findings", lambda r: _e(len(r.findings))),
            ("memory", lambda r: _memory_cell(r.verdicts)),
            ("recovery", lambda r: _recovery_cell(r.verdicts)),
            ("decode tok/s (median)", lambda r: _num(r.verdicts["perf"]["drift"]["decode_tps"].get("median"), "{:.4g}")),
            ("decode tok/s drift", lambda r: _drift_cell(r.verdicts["perf"]["drift"]["decode_tps"])),
            ("latency drift", lambda r: _drift_cell(r.verdicts["perf"]["drift"]["latency_s"])),
            ("answers (oracle)", lambda r: _oracle_cell(r.verdicts.get("oracle")))]
    out = ["<table><tbody>"]
    for name, cell in rows:
        out.append(f"<tr><th>{_e(name)}</th>" + "".join(f"<td>{cell(r)}</td>" for r in runs) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _ended_by(run: RunFolder) -> str:
    end = run.run_end
    if end is not None:
        return str(end.get("reason"))
    if run.state == run_folder.RUNNING:
        return "in progress (no run_end yet, its writer is running)"
    return "no run_end (killed?)"


def _backend_cell(run: RunFolder) -> str:
    req, act = run.backend_requested, run.backend_actual
    fallback = any(e.get("kind") == "cpu_fallback" for e in run.faults)
    cls = "bad" if (req and act and req != act) or fallback else ""
    extra = " (CPU fallback!)" if fallback else ""
    return f'<span class="{cls}">{_e(req)} → {_e(act)}{extra}</span>'


def _memory_cell(v: dict) -> str:
    parts = []
    for name, s in v["memory"]["series"].items():
        if s["verdict"] == "no_data":
            continue
        slope = (s.get("slope_per_iteration") or {}).get("value")
        parts.append(f'{_e(name)}: <span class="{_verdict_cls(s["verdict"])}">{_e(s["verdict"])}</span>'
                     + (f" ({_size(slope)}/it)" if s["verdict"] in ("leak", "growth_stopped") else ""))
    return "<br>".join(parts) or '<span class="muted">no samples</span>'


def _recovery_cell(v: dict) -> str:
    rec = v["recovery"]
    if not rec["attempts"]:
        return '<span class="muted">none needed</span>'
    cls = "good" if rec["rate"] == 1 else "bad"
    return f'<span class="{cls}">{rec["recovered"]}/{rec["attempts"]} recovered</span>, score {_num(rec["score"])}'


def _oracle_cell(v: dict | None) -> str:
    if not v:
        return '<span class="muted">not checked (no --reference)</span>'
    if not v["checked"]:
        return '<span class="bad">reference given, no turn checked</span>'
    bad = v["wrong"] + v["nonfinite"]
    text = f"{v['checked']} checked, {v['wrong']} wrong, {v['nonfinite']} non-finite"
    drift = (v.get("drift") or {}).get("verdict")
    return (f'<span class="{"bad" if bad else "good"}">{_e(text)}</span>'
            + (' <span class="bad">KL growing</span>' if drift == "growing" else ""))


def _oracle_section(r: _Run) -> str:
    """--reference runs: what the teacher-forced turns showed (soak.analysis.oracle_verdict)."""
    from soak.outputs._plots import oracle_svg

    v = r.verdicts.get("oracle")
    if not v:
        return ""
    thr = v.get("thresholds") or {}
    kl, ab, d = v.get("kl_max") or {}, v.get("abs_max") or {}, v.get("drift") or {}
    first, later = v["by_turn"]["first"], v["by_turn"]["later"]
    dist = (lambda q: f"median {_num(q.get('median'))}, p99 {_num(q.get('p99'))}, max {_num(q.get('max'))}"
            if q else "–")
    drift = _e(d.get("verdict"))
    if d.get("verdict") in ("growing", "stable"):
        drift = (f"<span class='{'bad' if d['verdict'] == 'growing' else 'good'}'>{drift}</span>: "
                 f"{_num(d.get('start'))} → {_num(d.get('end'))} nats (p={_num(d.get('p'))}, iterations "
                 f"{_e(d.get('first_iteration'))}–{_e(d.get('last_iteration'))})")
    out = ["<dl>",
           f"<dt>reference</dt><dd><code>{_e(v.get('reference'))}</code>"
           + (f", one conversation in {_e(v['every'])} checked" if v.get("every") not in (None, 1) else "") + "</dd>",
           f"<dt>thresholds (per step)</dt><dd>{_e(thr.get('class'))} class: max |Δ log p| {_e(thr.get('abs_max'))}, "
           f"KL {_e(thr.get('kl_max'))}</dd>",
           f"<dt>checked</dt><dd>{v['checked']} turns, {v['steps']} steps</dd>",
           f"<dt>wrong</dt><dd class='{'bad' if v['wrong'] else 'good'}'>{v['wrong']} wrong_output"
           + (f", first at iteration {v['first_wrong_iteration']}" if v["first_wrong_iteration"] is not None else "")
           + "</dd>",
           f"<dt>non-finite</dt><dd class='{'bad' if v['nonfinite'] else 'good'}'>{v['nonfinite']} nonfinite_logits"
           + (f", first at iteration {v['first_nonfinite_iteration']}" if v["first_nonfinite_iteration"] is not None
              else "") + "</dd>",
           f"<dt>by turn</dt><dd>first turns {first['wrong']}/{first['checked']} wrong, later turns "
           f"{later['wrong']}/{later['checked']} wrong</dd>",
           f"<dt>per-turn max KL</dt><dd>{dist(kl)}</dd><dt>per-turn max |Δ log p|</dt><dd>{dist(ab)}</dd>",
           f"<dt>KL drift over the run</dt><dd>{drift}</dd></dl>",
           "<div class=plot>", oracle_svg(v, r.folder.run_id), "</div>"]
    turns = v.get("wrong_turns") or []
    if turns:
        out.append("<table><thead><tr><th>iteration</th><th>conversation</th><th>turn</th><th>steps</th>"
                   "<th>first step over</th><th>first flip</th><th>max |Δ| (step)</th><th>max KL (step)</th>"
                   "<th>mean KL</th><th>flips</th><th>non-finite steps (first)</th></tr></thead><tbody>")
        for t in turns:
            nf = t.get("nonfinite_steps")
            out.append(f"<tr class='{'bad' if nf else ''}'><td class=num>{_e(t.get('i'))}</td>"
                       f"<td class=num>{_e(t.get('conversation'))}</td><td class=num>{_e(t.get('turn'))}</td>"
                       f"<td class=num>{_e(t.get('steps'))}</td><td class=num>{_e(t.get('first_over'))}</td>"
                       f"<td class=num>{_e(t.get('first_flip'))}</td>"
                       f"<td class=num>{_num(t.get('abs_max'))} ({_e(t.get('abs_max_step'))})</td>"
                       f"<td class=num>{_num(t.get('kl_max'))} ({_e(t.get('kl_max_step'))})</td>"
                       f"<td class=num>{_num(t.get('kl_mean'))}</td><td class=num>{_e(t.get('flips'))}</td>"
                       f"<td class=num>{_e(nf)}" + (f" ({_e(t.get('first_nonfinite'))})" if nf else "") + "</td></tr>")
        out.append("</tbody></table>")
        total = v["wrong"] + v["nonfinite"]
        if total > len(turns):
            out.append(f"<p class=muted>the first {len(turns)} of {total} wrong turns</p>")
    return "\n".join(out)


def _drift_cell(d: dict) -> str:
    if d.get("drift_pct") is None:
        return f'<span class="muted">{_e(d["verdict"])}</span>'
    return f'<span class="{_verdict_cls(d["verdict"])}">{d["drift_pct"]:+.1f}% ({_e(d["verdict"])})</span>'


def _memory_table(r: _Run) -> str:
    out = ["<table><thead><tr><th>series</th><th>verdict</th><th>slope / iteration [interval]</th>"
           "<th>slope / hour [interval]</th><th>growth over span</th><th>p (modified MK)</th><th>samples</th>"
           "</tr></thead><tbody>"]
    for name, s in r.verdicts["memory"]["series"].items():
        pi, ph = s.get("slope_per_iteration") or {}, s.get("slope_per_hour") or {}
        out.append(f"<tr><td>{_e(name)}</td><td class='{_verdict_cls(s['verdict'])}'>{_e(s['verdict'])}</td>"
                   f"<td class=num>{_size(pi.get('value'))} [{_size(pi.get('lo'))}, {_size(pi.get('hi'))}]</td>"
                   f"<td class=num>{_size(ph.get('value'))} [{_size(ph.get('lo'))}, {_size(ph.get('hi'))}]</td>"
                   f"<td class=num>{_size(s.get('growth_bytes'))}</td>"
                   f"<td class=num>{_num((s.get('test') or {}).get('p'))}</td><td class=num>{_e(s.get('samples'))}</td></tr>")
    out.append("</tbody></table>")
    ret = r.verdicts["memory"].get("returned_after_recovery")
    if ret is not None:
        out.append(f"<p>Memory after recovery: <span class='{'good' if ret else 'bad'}'>"
                   f"{'came back every time' if ret else 'did NOT come back after some recoveries'}</span>.</p>")
    return "\n".join(out)


def _fault_table(r: _Run) -> str:
    if not r.findings:
        return "<p class=good>No faults.</p>"
    out = ["<table><thead><tr><th>severity</th><th>fault</th><th>title</th><th>kind / phase</th><th>count</th>"
           "<th>iterations</th><th>signature</th><th>references</th></tr></thead><tbody>"]
    for f in r.findings:
        fid = f.get("fault_id")
        label = (f'<a href="#{_anchor(fid)}">{_e(fid)}</a>' if fid else '<span class="muted">not in catalog</span>')
        refs = []
        for m in (f.get("matches") or [])[:1]:
            for ref in (m.get("remedy") or {}).get("references") or []:
                refs.append(f'<a href="{_e(ref)}" rel="noreferrer">{_e(ref.rsplit("/", 2)[-2] + "/" + ref.rsplit("/", 1)[-1] if "/" in ref else ref)}</a>')
        sev = f.get("severity") or "?"
        out.append(f"<tr><td><span class='sev-{_e(sev)}'>{_e(sev)}</span></td><td>{label}</td>"
                   f"<td>{_e(f.get('title'))}</td><td>{_e(f.get('kind'))} / {_e(f.get('phase'))}</td>"
                   f"<td class=num>{_e(f.get('events') or len(f.get('occurrences') or []))}</td>"
                   f"<td>{_e(f.get('first_iteration'))}–{_e(f.get('last_iteration'))}</td>"
                   f"<td><code>{_e(f.get('signature'))}</code><br><span class=muted>{_e(f.get('signature_text'))}</span></td>"
                   f"<td>{'<br>'.join(refs)}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _catalog_entries(runs: list[_Run]) -> str:
    seen: dict[str, dict] = {}
    for r in runs:
        for f in r.findings:
            for m in f.get("matches") or []:
                if m.get("id") and m["id"] not in seen:
                    seen[m["id"]] = m
    if not seen:
        return "<p class=muted>No finding matched a catalog entry.</p>"
    out = []
    for fid, m in seen.items():
        rem = m.get("remedy") or {}
        out.append(f"<h3 id='{_anchor(fid)}'>{_e(fid)}: {_e(m.get('title'))}</h3><dl>"
                   f"<dt>severity</dt><dd>{_e(m.get('severity'))}</dd>"
                   f"<dt>why it matched</dt><dd>{_e('; '.join(m.get('why') or []))}</dd>"
                   f"<dt>cause</dt><dd>{_e(rem.get('cause'))}</dd><dt>workaround</dt><dd>{_e(rem.get('workaround'))}</dd>"
                   f"<dt>fixed in</dt><dd>{_e(rem.get('fixed_in') or '–')}</dd><dt>references</dt><dd>"
                   + "<br>".join(f'<a href="{_e(u)}" rel="noreferrer">{_e(u)}</a>' for u in rem.get("references") or [])
                   + "</dd></dl>")
    return "\n".join(out)


def _recovery_table(r: _Run) -> str:
    rec = r.verdicts["recovery"]
    if not rec["attempts"]:
        return "<p class=muted>No recovery was needed.</p>"
    out = [f"<p>Ladder: {' → '.join(map(_e, rec['ladder']))}. Recovery score <b>{_num(rec['score'])}</b> / 100 "
           f"(1 per fault cleared by the first step, halved per further step, halved again if memory did not come back).</p>",
           "<table><thead><tr><th>fault kind</th><th>attempts</th><th>recovered</th><th>by step</th>"
           "<th>median / max time</th><th>RSS given back (median)</th><th>memory came back</th></tr></thead><tbody>"]
    for kind, k in rec["per_kind"].items():
        steps = ", ".join(f"{_e(s)} ×{n}" for s, n in k["by_step"].items()) or "–"
        back = k.get("memory_returned")
        out.append(f"<tr><td>{_e(kind)}</td><td class=num>{k['attempts']}</td>"
                   f"<td class='num {'good' if k['rate'] == 1 else 'bad'}'>{k['recovered']}</td><td>{steps}</td>"
                   f"<td class=num>{_num(k['duration_s_median'])} s / {_num(k['duration_s_max'])} s</td>"
                   f"<td class=num>{_size(k['rss_given_back_median'])}</td>"
                   f"<td class=num>{'–' if back is None else f'{100 * back:.0f}%'}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _environment(r: _Run) -> str:
    from soak.outputs.environment import environment

    env = environment(r.folder)
    out = ["<dl>"]
    for k, v in env.items():
        if v in (None, {}, []):
            continue
        text = json.dumps(v, indent=1, ensure_ascii=False, default=str) if isinstance(v, (dict, list)) else str(v)
        out.append(f"<dt>{_e(k)}</dt><dd><code style='white-space:pre-wrap'>{_e(text)}</code></dd>")
    out.append("</dl>")
    return "\n".join(out)


def _comparison(runs: list[_Run], baseline: RunFolder | None) -> str:
    base = baseline or (runs[0].folder if len(runs) > 1 else None)
    if base is None:
        return ""
    out = [f"<h2>Comparison against {_e(base.run_id)}</h2><table><thead><tr><th>run</th><th>metric</th>"
           "<th>run median</th><th>baseline median</th><th>change</th></tr></thead><tbody>"]
    for r in runs:
        if r.folder.path == base.path:
            continue
        cmp = compare(r.folder, base)
        for metric, m in cmp["metrics"].items():
            cls = "bad" if m["regression"] and abs(m["change_pct"] or 0) >= 5 else ""
            out.append(f"<tr><td>{_e(r.folder.run_id)}</td><td>{_e(metric)}</td><td class=num>{_num(m['run'], '{:.4g}')}</td>"
                       f"<td class=num>{_num(m['baseline'], '{:.4g}')}</td>"
                       f"<td class='num {cls}'>{_num(m['change_pct'], '{:+.1f}')}%</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _ms(ns) -> str:
    return "-" if ns is None else f"{ns / 1e6:.2f} ms"


def _profile_section(r: _Run, runs: list[_Run]) -> str:
    """--cl-profile runs: where each phase's time went; beside a CPU run of the same seeded
    workload among the report's runs, which part makes the GPU slower."""
    from soak.analysis.profile import budget_words, explain, profile_run, same_workload

    prof = profile_run(r.folder)
    if not prof["windows"]:
        return ""
    rows = []
    for name, ph in prof["phases"].items():
        closure = (f"<span class={'good' if ph['closes'] else 'bad'}>{ph['closure']:.1%}</span>"
                   if ph.get("closure") is not None else "-")
        idle = f"{_ms(ph['idle_ns'])} ({ph['idle_fraction']:.0%})" if ph["idle_fraction"] is not None else _ms(ph["idle_ns"])
        gbs = f", {ph['transfer_gb_s']} GB/s" if ph["transfer_gb_s"] is not None else ""
        rows.append(f"<tr><td>{_e(name)}</td><td class=num>{ph['windows']}</td><td class=num>{_ms(ph.get('measured_ns'))}</td>"
                    f"<td class=num>{_ms(ph['kernels_ns'])} ({ph['kernel_count']})</td>"
                    f"<td class=num>{_ms(ph['transfers_ns'] + ph['other_ns'])} ({ph['transfer_bytes'] / 1e6:.2f} MB{gbs})</td>"
                    f"<td class=num>{idle}</td><td class=num>{_ms(ph['host_only_ns'])}</td><td class=num>{_ms(ph['host_api_ns'])}</td>"
                    f"<td class=num>{closure}</td><td class=num>{_e(ph.get('kernels_per_token', '-'))}</td>"
                    f"<td class=num>{_ms(ph['mean_kernel_ns'])}</td></tr>")
    out = ["<table><thead><tr><th>phase</th><th>windows</th><th>measured</th><th>kernels (launches)</th>"
           "<th>transfers</th><th>GPU idle</th><th>host-only</th><th>host API (overlaps)</th><th>closure</th>"
           "<th>kernels/token</th><th>mean kernel</th></tr></thead><tbody>", *rows, "</tbody></table>"]
    for name, ph in prof["phases"].items():
        if ph["top_kernels"] and name in ("prefill", "decode", "respond"):
            out.append(f"<h3>Top kernels: {_e(name)}</h3><table><thead><tr><th>kernel</th><th>launches</th>"
                       "<th>device time</th><th>mean</th><th>p99 (max of shapes)</th></tr></thead><tbody>")
            for k in ph["top_kernels"][:8]:
                out.append(f"<tr><td><code>{_e(k['kernel'])}</code></td><td class=num>{k['count']}</td>"
                           f"<td class=num>{_ms(k['total_ns'])}</td><td class=num>{k['total_ns'] / max(k['count'], 1) / 1e3:.1f} us</td>"
                           f"<td class=num>{k['p99_ns'] / 1e3:.1f} us</td></tr>")
            out.append("</tbody></table>")
    for other in runs:
        if other is r or (other.folder.backend_actual or other.folder.backend_requested) != "cpu":
            continue
        if same_workload(r.folder, other.folder) is None:
            lines = explain(prof, other.folder)
            if lines:
                out.append(f"<h3>GPU vs CPU ({_e(other.folder.run_id)}, same seeded workload)</h3><ul>"
                           + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>")
            break
    sampled = [(n, ph) for n, ph in prof["phases"].items() if ph["kernel_timed"] < ph["kernel_count"]]
    if sampled:
        out.append("<p class=muted>sampling: " + "; ".join(
            f"{_e(n)} {ph['kernel_timed']} of {ph['kernel_count']} launches timed (1 in {ph['rate']:g}), "
            f"{_ms(ph['estimated_ns'])} estimated from their kernel's mean"
            + (f", {ph['unestimated']} launches never timed" if ph["unestimated"] else "") for n, ph in sampled)
            + " (--cl-profile-sample 1 times every launch, and slows launch-bound decode)</p>")
    costs = [(n, ph) for n, ph in prof["phases"].items() if ph["cost_fraction"] is not None
             and (ph["cost_ns"] or ph["budget_pct"] is not None)]
    if costs:
        out.append("<p class=muted>profiler cost (its own host time against the phase's wall time): " + "; ".join(
            f"{_e(n)} {_ms(ph['cost_ns'])} = {ph['cost_fraction']:.1%} ({_e(budget_words(ph))})" for n, ph in costs)
            + "</p>")
    out.append("<p class=muted>closure: kernels + transfers + GPU idle + host-only against the engine's measured "
               "phase time (within 10 %); host API time is inside CL calls and overlaps the device time.</p>")
    return "\n".join(out)


def _status_banner(r: _Run) -> str:
    """At the top, per run: in progress (no run_end yet), then the built-in gate's result."""
    from soak.outputs.gate import evaluate
    from soak.outputs.policy import default_policy

    rid = _e(r.folder.run_id)
    out = []
    if r.folder.state != run_folder.COMPLETE:
        if r.folder.state == run_folder.RUNNING:
            out.append(f"<p class=warn><b>{rid}: in progress</b> (no run_end yet, its event log still being "
                       f"written); figures are as of the last event. <code>soak status {_e(r.folder.path)}</code> "
                       f"shows how it goes.</p>")
        else:
            out.append(f"<p class=bad>{rid}: ended without run_end (killed, or the machine went down); "
                       f"figures are as of the last event.</p>")
    results, _ = evaluate(r.folder, default_policy())
    failed = [x for x in results if not x.passed]
    verdict = (f"<span class=bad>FAILED</span> ({len(results) - len(failed)}/{len(results)} rules pass): "
               + "; ".join(f"<b>{_e(x.name)}</b> {_e(x.message)}" for x in failed)) if failed else \
        f"<span class=good>passed</span> ({len(results)} rules)"
    out.append(f"<p><b>gate</b> (built-in policy; <code>soak gate {_e(r.folder.path)} --policy FILE</code> for "
               f"yours) for {rid}: {verdict}</p>")
    return "\n".join(out)


def render_report(run_dirs: list, baseline=None) -> str:
    from soak.outputs._plots import timeline_svg

    if not run_dirs:
        raise BadInput("no run folder given", hint="soak report logs/<run-id> [more runs] -o report.html")
    base = RunFolder(baseline) if baseline else None
    runs = [_Run(p, base) for p in run_dirs]
    title = "soak report: " + ", ".join(r.folder.run_id for r in runs)
    parts = [page_head(title, data_images=True),
             f"<h1>{_e(title)}</h1><p class=muted>generated {_e(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'))}"
             f" by soak from the run folder(s); self-contained, no network.</p>",
             *[_status_banner(r) for r in runs],
             "<h2>Summary and verdicts</h2>", _summary(runs),
             _comparison(runs, base),
             "<h2>Memory and performance over the run</h2><div class=plot>", timeline_svg([r.folder for r in runs]), "</div>"]
    for r in runs:
        rid = _e(r.folder.run_id)
        parts += [f"<h2>Memory verdicts: {rid}</h2>", _memory_table(r),
                  f"<h2>Faults: {rid}</h2>", _fault_table(r),
                  f"<h2>Recovery: {rid}</h2>", _recovery_table(r)]
        oracle = _oracle_section(r)
        if oracle:
            parts += [f"<h2>Wrong-answer oracle: {rid}</h2>", oracle]
        profile = _profile_section(r, runs)
        if profile:
            parts += [f"<h2>GPU profile: {rid}</h2>", profile]
    parts += ["<h2>Catalog entries</h2>", _catalog_entries(runs)]
    for r in runs:
        parts += [f"<h2>Environment: {_e(r.folder.run_id)}</h2>", _environment(r)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dirs: list, out: str | Path, baseline=None) -> Path:
    out = Path(out)
    text = render_report(run_dirs, baseline)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot write report {out}: {exc}", hint="give a writable path with -o FILE") from None
    write_bytes(out, text.encode("utf-8", "surrogatepass"))
    return out

"""The page of soak's HTML outputs (`soak report`, `soak merge`): one stylesheet, one
escaping, one head (self-contained: inline CSS, a Content-Security-Policy that
allows no script and no network)."""

from __future__ import annotations

import html

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px} h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px} th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600} .good{color:#1b5e20} .warn{color:#a15c00} .muted{color:#777}
code{background:#f3f3f3;padding:0 3px;border-radius:3px} .plot svg{max-width:100%;height:auto}
.sev-critical{color:#fff;background:#b00020;padding:0 4px;border-radius:3px} .sev-high{color:#b00020}
.sev-medium{color:#a15c00} dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px} dt{font-weight:600}
"""


def esc(v) -> str:
    """Text for HTML content or a quoted attribute (None: empty)."""
    return html.escape("" if v is None else str(v), quote=True)


def page_head(title: str, extra_css: str = "", data_images: bool = False, scripts: tuple[str, ...] = ()) -> str:
    """<!DOCTYPE html> up to the open <body>: charset, title, viewport, the CSP (data: images only
    when asked: the report's inline plots; inline scripts only those given, by their SHA-256: a
    script a run's strings could inject is never run), the stylesheet."""
    csp = "default-src 'none'; style-src 'unsafe-inline'" + ("; img-src data:" if data_images else "")
    if scripts:
        csp += "; script-src " + " ".join(f"'sha256-{script_hash(s)}'" for s in scripts)
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<meta http-equiv=Content-Security-Policy content=\"{csp}\">"
            f"<style>{CSS}{extra_css}</style></head><body>")


def script_hash(script: str) -> str:
    """The CSP hash of an inline <script> body."""
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
